//! Dockerfile and .dockerignore, and the container's HEALTHCHECK script against a live gateway.

use super::*;

#[derive(Debug)]
pub(super) struct Stage {
    pub(super) name: String,
    from: String,
    /// (instruction, arguments), continuation lines joined.
    steps: Vec<(String, String)>,
}

pub(super) fn dockerfile_stages() -> Vec<Stage> {
    let mut stages: Vec<Stage> = Vec::new();
    let mut logical = String::new();
    for line in read("Dockerfile").lines() {
        let trimmed = line.trim();
        if logical.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if trimmed.starts_with('#') {
            continue; // a comment inside a continued instruction
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                logical.push_str(part);
                logical.push(' ');
                continue;
            }
            None => logical.push_str(trimmed),
        }
        let (instruction, args) = logical
            .split_once(char::is_whitespace)
            .unwrap_or((&logical, ""));
        let (instruction, args) = (instruction.to_ascii_uppercase(), args.trim().to_string());
        if instruction == "FROM" {
            let words: Vec<&str> = args.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => name.to_string(),
                _ => stages.len().to_string(),
            };
            stages.push(Stage {
                name,
                from: words.first().unwrap_or(&"").to_string(),
                steps: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.steps.push((instruction, args));
        }
        logical.clear();
    }
    stages
}

impl Stage {
    fn args_of(&self, instruction: &str) -> Vec<&str> {
        self.steps
            .iter()
            .filter(|(i, _)| i == instruction)
            .map(|(_, a)| a.as_str())
            .collect()
    }
}

/// The numeric user a stage ends with.
pub(super) fn dockerfile_user(stage: &str) -> Option<u64> {
    let stages = dockerfile_stages();
    let stage = stages.iter().find(|s| s.name == stage)?;
    let user = stage.args_of("USER").last()?.split(':').next()?.to_string();
    user.parse().ok()
}

/// The words of an exec-form instruction (`["a", "b"]`).
fn exec_form(args: &str) -> Vec<String> {
    let json = args
        .find('[')
        .map(|i| &args[i..])
        .unwrap_or_else(|| panic!("not exec form: {args}"));
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{args}: {e}"))
}

#[test]
fn dockerfile_builds_in_stages_and_runs_as_a_non_root_user_with_a_healthcheck() {
    let stages = dockerfile_stages();
    assert!(stages.len() >= 2, "{stages:?}");
    let builder = &stages[0];
    assert!(builder.from.starts_with("rust:"), "{}", builder.from);
    let runs = builder.args_of("RUN").join("\n");
    assert!(runs.contains("cmake"), "Pingora's build needs cmake");
    assert!(
        runs.contains("cargo build --release --locked"),
        "the image must build what Cargo.lock pins: {runs}"
    );

    // The default target (the last stage) is the gateway, on a small runtime image.
    let runtime = stages.last().expect("a stage");
    assert_eq!(runtime.name, "runtime");
    assert!(
        runtime.from.contains("-slim") || runtime.from.contains("distroless"),
        "{} is not a minimal runtime image",
        runtime.from
    );
    for stage in stages.iter().filter(|s| s.name != builder.name) {
        let user = stage.args_of("USER");
        let last = user.last().unwrap_or(&"root");
        let uid = last.split(':').next().unwrap_or("");
        assert!(
            uid.parse::<u64>().is_ok_and(|u| u > 0),
            "stage {} runs as `{last}`: give a numeric non-root user (Kubernetes' runAsNonRoot checks it)",
            stage.name
        );
        assert!(
            stage.args_of("ADD").is_empty(),
            "ADD fetches and unpacks: COPY"
        );
    }

    // No secret or history reaches any stage: COPY names sources one by one.
    for stage in &stages {
        for args in stage.args_of("COPY") {
            if args.contains("--from=") {
                continue;
            }
            let words: Vec<&str> = args
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let (sources, _dest) = words.split_at(words.len() - 1);
            for source in sources {
                let s = source.trim_end_matches('/');
                assert!(
                    !matches!(s, "." | "*" | ".git" | ".env" | "certs" | "target")
                        && !s.ends_with(".pem")
                        && !s.ends_with(".key"),
                    "stage {}: COPY {source}",
                    stage.name
                );
                assert!(repo().join(s).exists(), "COPY {source}: no such file");
            }
        }
        for args in stage.args_of("ARG").into_iter().chain(stage.args_of("ENV")) {
            let upper = args.to_ascii_uppercase();
            assert!(
                !["PASSWORD", "SECRET", "TOKEN", "API_KEY"]
                    .iter()
                    .any(|s| upper.contains(s)),
                "a secret in the image's build args or environment: {args}"
            );
        }
    }

    // The HEALTHCHECK runs a script the stage copies in, from this repository.
    for stage in stages.iter().filter(|s| s.name != builder.name) {
        let check = stage
            .args_of("HEALTHCHECK")
            .pop()
            .unwrap_or_else(|| panic!("stage {} has no HEALTHCHECK", stage.name));
        let command = exec_form(check);
        let copied = stage
            .args_of("COPY")
            .into_iter()
            .find_map(|a| {
                let w: Vec<&str> = a.split_whitespace().collect();
                (w.last() == Some(&command[0].as_str())).then(|| w[w.len() - 2].to_string())
            })
            .unwrap_or_else(|| panic!("{} is not copied into {}", command[0], stage.name));
        let script = repo().join(&copied);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&script)
                .expect("healthcheck script")
                .permissions(),
        );
        assert!(mode & 0o111 != 0, "{copied} is not executable");
    }

    // The gateway starts from the copied binary with the config path the deploy files mount.
    let entrypoint = exec_form(runtime.args_of("ENTRYPOINT").pop().expect("ENTRYPOINT"));
    assert_eq!(entrypoint, ["/usr/local/bin/palisade"]);
    assert!(runtime
        .args_of("COPY")
        .iter()
        .any(|a| a.contains("--from=builder") && a.ends_with(" /usr/local/bin/palisade")));
    let cmd = exec_form(runtime.args_of("CMD").pop().expect("CMD"));
    assert_eq!(cmd, ["run", "--config", "/etc/palisade/gateway.toml"]);
    let exposed: BTreeSet<u16> = runtime
        .args_of("EXPOSE")
        .iter()
        .flat_map(|a| a.split_whitespace())
        .filter_map(|p| p.parse().ok())
        .collect();
    let config: toml::Value = toml::from_str(&read("deploy/compose/gateway.toml")).expect("TOML");
    let mut wanted = listen_ports(&config);
    wanted.insert(admin_port(&config));
    assert!(
        wanted.is_subset(&exposed),
        "EXPOSE {exposed:?} lacks {wanted:?}"
    );

    if installed("hadolint", &["--version"]) {
        let out = Command::new("hadolint")
            .arg(repo().join("Dockerfile"))
            .output()
            .expect("hadolint");
        assert_ok(&out, "hadolint");
    }
}

/// Whether Docker leaves `path` out of the build context under `.dockerignore`'s patterns:
/// the last pattern matching the path or one of its parent folders decides.
fn docker_ignores(patterns: &[(bool, Vec<String>)], path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    let mut ignored = false;
    for (keep, pattern) in patterns {
        let hit = (1..=parts.len()).any(|n| glob(pattern, &parts[..n]));
        if hit {
            ignored = !keep;
        }
    }
    ignored
}

fn glob(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((p, rest)) if p == "**" => (0..=path.len()).any(|skip| glob(rest, &path[skip..])),
        Some((p, rest)) => {
            !path.is_empty() && segment(p.as_bytes(), path[0].as_bytes()) && glob(rest, &path[1..])
        }
    }
}

fn segment(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => segment(&p[1..], s) || (!s.is_empty() && segment(p, &s[1..])),
        (Some(b'?'), Some(_)) => segment(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => segment(&p[1..], &s[1..]),
        _ => false,
    }
}

fn dockerignore() -> Vec<(bool, Vec<String>)> {
    read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (keep, p) = match l.strip_prefix('!') {
                Some(p) => (true, p),
                None => (false, l),
            };
            let p = p.trim_start_matches('/').trim_end_matches('/');
            (keep, p.split('/').map(String::from).collect())
        })
        .collect()
}

#[test]
fn dockerignore_keeps_history_env_files_and_keys_out_of_the_build_context() {
    let patterns = dockerignore();
    // The matcher itself, on patterns whose meaning is known.
    let sample: Vec<(bool, Vec<String>)> = vec![
        (false, vec!["*".into()]),
        (true, vec!["src".into()]),
        (false, vec!["**".into(), "*.pem".into()]),
    ];
    assert!(docker_ignores(&sample, "README.md"));
    assert!(!docker_ignores(&sample, "src/main.rs"));
    assert!(docker_ignores(&sample, "src/deep/dev.pem"));

    for secret in [
        ".git/config",
        ".git/objects/ab/cdef",
        ".env",
        "deploy/.env",
        "src/.env",
        "src/.env.local",
        "certs/dev.pem",
        "certs/dev-key.pem",
        "examples/certs/dev-key.pem",
        "src/server.key",
        "deploy/docker/tls.key",
        "deploy/docker/cert.pem",
        "tests/fixtures/ca.pem",
        "target/debug/palisade",
        "gateway.toml",
    ] {
        assert!(
            docker_ignores(&patterns, secret),
            "{secret} would be sent into the build context"
        );
    }
    // What the Dockerfile copies must be there.
    let mut needed = vec![
        "Cargo.toml".to_string(),
        "Cargo.lock".into(),
        "build.rs".into(),
    ];
    // The sources the build reads: the Rust files git tracks in the copied folders (a local,
    // untracked key file is no build input; example configs and their certs/ need not go in),
    // or every file there when there is no git; and the healthcheck script.
    let tops = ["src", "benches", "examples"];
    needed.push("deploy/docker/healthcheck".into());
    match Command::new("git")
        .args(["ls-files", "-z", "--"])
        .args(tops)
        .current_dir(repo())
        .output()
    {
        Ok(out) if out.status.success() => needed.extend(
            String::from_utf8_lossy(&out.stdout)
                .split('\0')
                .filter(|f| f.ends_with(".rs"))
                .map(String::from),
        ),
        _ => {
            let mut dirs: Vec<PathBuf> = tops.iter().map(|t| repo().join(t)).collect();
            while let Some(dir) = dirs.pop() {
                for entry in std::fs::read_dir(&dir).expect("folder").flatten() {
                    let path = entry.path();
                    if path.is_dir() {
                        dirs.push(path);
                    } else if path.extension().is_some_and(|e| e == "rs") {
                        let rel = path.strip_prefix(repo()).expect("in repo");
                        needed.push(rel.to_string_lossy().into_owned());
                    }
                }
            }
        }
    }
    assert!(needed.iter().any(|f| f == "src/main.rs"), "{needed:?}");
    for stage in dockerfile_stages() {
        for args in stage.args_of("COPY") {
            if !args.contains("--from=") {
                let words: Vec<&str> = args.split_whitespace().collect();
                needed.extend(words[..words.len() - 1].iter().map(|w| w.to_string()));
            }
        }
    }
    for file in needed {
        assert!(
            !docker_ignores(&patterns, file.trim_end_matches('/')),
            "{file} is needed by the build but left out of the context"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_healthcheck_script_passes_only_on_a_200_from_the_admin_listener() {
    let upstream = Upstream::start("app").await;
    let gw = Gateway::start(&format!(
        "{TLS_BASICS}\n[upstreams.app]\nservers = [\"{}\"]\n\n[[routes]]\nname = \"api\"\npath = \"/api\"\nupstream = \"app\"\n",
        upstream.addr
    ))
    .await;
    let script = repo().join("deploy/docker/healthcheck");
    let admin = format!("127.0.0.1:{}", gw.ports.admin);
    let probe = |args: Vec<String>, env: Option<&str>| {
        let mut cmd = Command::new(&script);
        cmd.args(args).env_remove("PALISADE_HEALTH_ADDR");
        if let Some(addr) = env {
            cmd.env("PALISADE_HEALTH_ADDR", addr);
        }
        let out = cmd.output().expect("run the healthcheck script (bash)");
        out.status.code()
    };
    assert_eq!(probe(vec![admin.clone()], None), Some(0));
    assert_eq!(probe(vec![admin.clone(), "/readyz".into()], None), Some(0));
    assert_eq!(probe(vec![], Some(&admin)), Some(0), "PALISADE_HEALTH_ADDR");
    assert_eq!(
        probe(vec![admin.clone(), "/nope".into()], None),
        Some(1),
        "a 404"
    );
    assert_eq!(probe(vec![DEAD.into()], None), Some(1), "nothing listening");
    // The gateway's own listener answers /healthz, but with a 404: not the admin routes.
    let http = format!("127.0.0.1:{}", gw.ports.http);
    assert_eq!(probe(vec![http], None), Some(1));
}
