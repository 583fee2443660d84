//! deploy/systemd: the unit's sandbox, its config check, reload by SIGHUP.

use super::*;

/// `Key=value` lines of the [Service] section, in order.
fn unit_service_settings(unit: &str) -> Vec<(String, String)> {
    let mut section = "";
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if section == "[Service]" {
            if let Some((k, v)) = line.split_once('=') {
                out.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
    }
    out
}

#[test]
fn systemd_unit_is_sandboxed_checks_its_config_and_reloads_with_sighup() {
    let unit = read("deploy/systemd/palisade.service");
    let settings = unit_service_settings(&unit);
    let all = |key: &str| -> Vec<&str> {
        settings
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let one = |key: &str| -> &str {
        all(key)
            .last()
            .copied()
            .unwrap_or_else(|| panic!("{key} is not set"))
    };

    let dynamic = all("DynamicUser")
        .last()
        .is_some_and(|v| *v == "yes" || *v == "true");
    let user = all("User").last().copied().unwrap_or("root");
    assert!(
        dynamic || !["root", "0", ""].contains(&user),
        "the unit runs as {user}"
    );
    assert_eq!(one("NoNewPrivileges"), "true");
    assert_eq!(one("ProtectSystem"), "strict");
    assert_eq!(one("CapabilityBoundingSet"), "CAP_NET_BIND_SERVICE");
    for cap in all("AmbientCapabilities")
        .iter()
        .flat_map(|v| v.split_whitespace())
    {
        assert_eq!(
            cap, "CAP_NET_BIND_SERVICE",
            "ambient {cap} is outside the bounding set"
        );
    }
    let nofile: u64 = one("LimitNOFILE").parse().expect("LimitNOFILE");
    assert!(nofile >= 65536, "LimitNOFILE={nofile}");

    // It refuses to start, and to reload, on a config `palisade check` rejects, and reloads
    // with SIGHUP to the running process.
    let start = one("ExecStart");
    let config = start
        .split_whitespace()
        .skip_while(|w| *w != "--config")
        .nth(1)
        .expect("ExecStart names its --config");
    let check = format!("check {config}");
    assert!(
        all("ExecStartPre").iter().any(|c| c.ends_with(&check)),
        "ExecStartPre must run `palisade {check}`"
    );
    let reload = all("ExecReload");
    assert!(
        reload.first().is_some_and(|c| c.ends_with(&check)),
        "{reload:?}"
    );
    let hup = reload.iter().any(|c| {
        c.contains("kill -HUP $MAINPID")
            || c.contains("kill -s HUP $MAINPID")
            || c.contains("reload --pid-file")
    });
    assert!(hup, "ExecReload does not send SIGHUP: {reload:?}");
    if let Some(pid) = start
        .split_whitespace()
        .skip_while(|w| *w != "--pid-file")
        .nth(1)
    {
        let runtime_dir = format!("/run/{}/", one("RuntimeDirectory"));
        assert!(
            pid.starts_with(&runtime_dir),
            "{pid} is not writable under ProtectSystem=strict"
        );
    }
    let stop = one("TimeoutStopSec");
    let stop = stop
        .parse()
        .map(std::time::Duration::from_secs)
        .or_else(|_| humantime::parse_duration(stop))
        .expect("TimeoutStopSec");
    assert!(
        stop.as_secs() > 30,
        "TimeoutStopSec must outlast the default shutdown_grace (30s)"
    );

    if !installed("systemd-analyze", &["--version"]) {
        return;
    }
    // verify checks every Exec path: point them at the binary this test built.
    let work = Workdir::new();
    let unit_file = work.write(
        "palisade.service",
        &unit.replace("/usr/local/bin/palisade", BIN),
    );
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit_file)
        .output()
        .expect("systemd-analyze");
    assert_ok(&out, "systemd-analyze verify");
    // It exits 0 on unknown keys and bad values, which it only prints.
    assert!(
        out.stderr.is_empty(),
        "systemd-analyze verify warns:\n{}",
        output_text(&out)
    );
    // The sandbox as systemd grades it: 0 is fully locked down, 10 is wide open.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=25"])
        .arg(&unit_file)
        .output()
        .expect("systemd-analyze");
    if output_text(&out).contains("--offline") && output_text(&out).contains("nrecognized") {
        eprintln!("SKIPPED: this systemd-analyze has no `security --offline`");
    } else {
        assert_ok(&out, "systemd-analyze security (exposure above 2.5)");
    }
}
