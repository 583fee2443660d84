//! Embeds the git commit and a build id, so `palisade version`, `/version` and
//! `gateway_build_info` say which build is running.
use std::process::Command;

fn main() {
    let sha = std::env::var("PALISADE_GIT_SHA").ok().or_else(|| {
        Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
    });
    println!(
        "cargo:rustc-env=PALISADE_GIT_SHA={}",
        sha.unwrap_or_else(|| "unknown".into())
    );
    let build_id = std::env::var("PALISADE_BUILD_ID").unwrap_or_else(|_| "dev".into());
    println!("cargo:rustc-env=PALISADE_BUILD_ID={build_id}");
    println!("cargo:rerun-if-env-changed=PALISADE_GIT_SHA");
    println!("cargo:rerun-if-env-changed=PALISADE_BUILD_ID");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
}
