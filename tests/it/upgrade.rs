//! Zero-downtime upgrade through the real binary: a second `palisade run --upgrade` takes the
//! listening sockets (plain, TLS and admin) of the running one, which gets SIGQUIT, hands them
//! over and drains; under steady load across the switch, no request fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{Gateway, Upstream, BIN, TLS_BASICS};

fn config(upstream: &Upstream) -> String {
    format!(
        "{TLS_BASICS}\n[upstreams.app]\nservers = [\"{}\"]\n\n[[routes]]\nname = \"main\"\nupstream = \"app\"\n",
        upstream.addr
    )
}

/// The new process of an upgrade, killed when dropped; its access log and its stderr go to
/// files in the old one's workdir.
struct NewProcess {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl NewProcess {
    /// `palisade run --upgrade` with the old process's config and pid file: the upgrade socket
    /// is derived from the pid file, so both agree on it.
    fn spawn(work: &Path) -> NewProcess {
        let stdout = work.join("new-stdout.log");
        let stderr = work.join("new-stderr.log");
        let child = Command::new(BIN)
            .arg("run")
            .arg("--config")
            .arg(work.join("gateway.toml"))
            .arg("--pid-file")
            .arg(work.join("palisade.pid"))
            .arg("--upgrade")
            .env("RUST_LOG", "warn,palisade=info")
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("spawn palisade --upgrade");
        NewProcess {
            child,
            stdout,
            stderr,
        }
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Requests it served: the lines of its access log.
    fn served(&self) -> usize {
        access_lines(&self.stdout)
    }
}

impl Drop for NewProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn access_lines(file: &Path) -> usize {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
        .count()
}

fn pid_in(work: &Path) -> String {
    std::fs::read_to_string(work.join("palisade.pid"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Waits for the new process to wait for the sockets: the upgrade socket exists once it does.
async fn wait_for_upgrade_sock(new: &mut NewProcess, sock: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !sock.exists() {
        if let Some(status) = new.exited() {
            panic!(
                "the new process exited with {status} before it waited for the sockets:\n{}",
                new.stderr()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the new process never waited for the sockets:\n{}",
            new.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Outcome {
    task: &'static str,
    at: Instant,
    version: Option<reqwest::Version>,
    result: Result<(), String>,
}

/// One client in a loop over its keep-alive connection(s) until `stop`, `pause` between a
/// response and the next request: every answer must be a 200 with its whole body.
///
/// With no pause, the next request leaves as soon as the response is in: a gateway that closes
/// idle keep-alive connections the moment it stops accepting has it reset under it (hyper does
/// not retry a request it has written). A pause lets the client see such a close first.
fn hammer(
    task: &'static str,
    client: reqwest::Client,
    url: String,
    pause: Duration,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Outcome>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            let (version, result) = match client.get(&url).send().await {
                Ok(r) if r.status() == 200 => {
                    let version = r.version();
                    match r.bytes().await {
                        Ok(_) => (Some(version), Ok(())),
                        Err(e) => (Some(version), Err(format!("body: {e:?}"))),
                    }
                }
                Ok(r) => (Some(r.version()), Err(format!("status {}", r.status()))),
                Err(e) => (None, Err(format!("{e:?}"))),
            };
            log.lock().unwrap().push(Outcome {
                task,
                at: Instant::now(),
                version,
                result,
            });
            if pause.is_zero() {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(pause).await;
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_under_steady_load_loses_no_request() {
    let upstream = Upstream::start("app").await;
    let mut gw = Gateway::start(&config(&upstream)).await;
    let work = gw.work.path().to_path_buf();
    let old_pid = gw.pid().to_string();
    assert_eq!(pid_in(&work), old_pid);

    // Keep-alive clients on every listener: plain HTTP/1.1 (one of them with requests that take
    // a while, so some are in flight when the old process stops), HTTP/1.1 and HTTP/2 over TLS,
    // and the admin listener; most send their next request at once, two think a little first.
    let h1 = || gw.client_builder().http1_only().build().expect("client");
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let (now, think) = (Duration::ZERO, Duration::from_millis(20));
    let load =
        |task, client, url, pause| hammer(task, client, url, pause, stop.clone(), log.clone());
    let tasks = vec![
        load("http/1.1", h1(), gw.http_url("/a"), now),
        load("http/1.1", h1(), gw.http_url("/b"), think),
        load("http/1.1 slow", h1(), gw.http_url("/slow?ms=150"), now),
        load("https/1.1", h1(), gw.https_url("/c"), now),
        load("https/2", gw.client(), gw.https_url("/d"), now),
        load("admin", h1(), gw.admin_url("/healthz"), think),
    ];
    let count = |log: &Arc<Mutex<Vec<Outcome>>>| log.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(&log) < 60 {
        assert!(Instant::now() < deadline, "the load did not get going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // 1. The new process first: it waits for the sockets.
    let mut new = NewProcess::spawn(&work);
    wait_for_upgrade_sock(&mut new, &work.join("palisade.upgrade.sock")).await;
    assert_eq!(
        pid_in(&work),
        old_pid,
        "the pid file waits for the takeover"
    );

    // 2. SIGQUIT to the old one: it hands the sockets over, stops accepting and drains.
    let quit = Instant::now();
    gw.signal("QUIT");
    let new_pid = new.child.id().to_string();
    let deadline = Instant::now() + Duration::from_secs(15);
    while pid_in(&work) != new_pid {
        if let Some(status) = new.exited() {
            panic!("the new process exited with {status}:\n{}", new.stderr());
        }
        assert!(
            Instant::now() < deadline,
            "the new process did not take over:\n{}\n--- old:\n{}",
            new.stderr(),
            gw.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = gw
        .wait_exit(Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("the old process did not exit:\n{}", gw.stderr()));
    let exited = Instant::now();
    assert!(status.success(), "the old process exited with {status}");

    // 3. Load goes on against the new process alone.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let after = log.lock().unwrap().iter().filter(|o| o.at > exited).count();
        if after >= 60 && exited.elapsed() >= Duration::from_secs(1) {
            break;
        }
        assert!(Instant::now() < deadline, "no load after the switch");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.expect("client task");
    }
    assert!(new.exited().is_none(), "the new process is serving");

    let log = log.lock().unwrap();
    let failed: Vec<String> = log
        .iter()
        .filter_map(|o| {
            let e = o.result.as_ref().err()?;
            let since = o.at.saturating_duration_since(quit);
            Some(format!("{} at SIGQUIT+{since:?}: {e}", o.task))
        })
        .collect();
    let before = log.iter().filter(|o| o.at < quit).count();
    let after = log.iter().filter(|o| o.at > exited).count();
    let (old_served, new_served) = (gw.access_log().len(), new.served());
    eprintln!(
        "upgrade: {} requests, {} failed; {before} before SIGQUIT, {after} after the old process \
         exited ({:?} after SIGQUIT); the old process served {old_served}, the new {new_served} \
         (admin requests are not in the access log)",
        log.len(),
        failed.len(),
        exited - quit
    );
    assert!(
        failed.is_empty(),
        "{} of {} requests failed:\n{}\n--- old process:\n{}\n--- new process:\n{}",
        failed.len(),
        log.len(),
        failed.join("\n"),
        gw.stderr(),
        new.stderr()
    );
    assert!(old_served > 0 && new_served > 0, "both processes served");
    for task in ["http/1.1", "http/1.1 slow", "https/1.1", "https/2", "admin"] {
        let served_after = log
            .iter()
            .filter(|o| o.task == task && o.at > exited && o.result.is_ok())
            .count();
        assert!(served_after > 0, "{task}: nothing served after the switch");
    }
    assert!(
        log.iter()
            .filter(|o| o.task == "https/2")
            .all(|o| o.version == Some(reqwest::Version::HTTP_2)),
        "the HTTP/2 client spoke HTTP/2"
    );
    assert!(
        log.iter()
            .filter(|o| o.task.starts_with("http/1.1") || o.task == "https/1.1")
            .all(|o| o.version == Some(reqwest::Version::HTTP_11)),
        "the HTTP/1.1 clients spoke HTTP/1.1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigquit_with_no_new_process_waiting_is_ignored_and_a_lone_upgrade_gives_up() {
    let upstream = Upstream::start("app").await;
    let mut gw = Gateway::start(&config(&upstream)).await;
    let work = gw.work.path().to_path_buf();
    let old_pid = gw.pid().to_string();
    let c = gw.client();

    // SIGQUIT alone would hand the sockets to no one, then drain and exit: it is refused.
    gw.signal("QUIT");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gw
        .stderr()
        .contains("SIGQUIT ignored: no new process waits on")
    {
        assert!(Instant::now() < deadline, "{}", gw.stderr());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gw.wait_exit(Duration::from_millis(300)).await.is_none());
    assert_eq!(c.get(gw.https_url("/")).send().await.unwrap().status(), 200);

    // A new process that no one hands the sockets to gives up, and leaves the pid file alone.
    let mut new = NewProcess::spawn(&work);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = new.exited() {
            break status;
        }
        assert!(Instant::now() < deadline, "the lone upgrade kept waiting");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success(), "{status}");
    assert_eq!(pid_in(&work), old_pid);
    assert!(!work.join("palisade.upgrade.sock").exists());
    assert_eq!(c.get(gw.https_url("/")).send().await.unwrap().status(), 200);
    assert!(gw.wait_exit(Duration::from_millis(100)).await.is_none());
}
