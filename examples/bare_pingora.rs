//! Bare Pingora: a proxy with nothing but an upstream, the floor `make bench` measures Palisade
//! against. Whatever it costs per request, Palisade's architecture (Pingora's HTTP stack, its
//! upstream pool, rustls) costs too; the gap between this and nginx is not Palisade's policies.
//!
//! It runs as Palisade runs: the same thread count, one single-threaded runtime per thread (no
//! work stealing), mimalloc as malloc, HTTP/2 on the TLS listener, the same upstream keep-alive
//! pool size, and the pingora-core this tree builds
//! (`vendor/pingora-core`, see its PATCHES.md).
//!
//!   cargo run --release --example bare_pingora -- HTTP_ADDR HTTPS_ADDR CERT KEY UPSTREAM THREADS

use pingora_core::listeners::tls::TlsSettings;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};

// mimalloc in place of malloc and free, as in Palisade (src/main.rs).
extern crate mimalloc;

struct Bare {
    peer: HttpPeer,
}

impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora_error::Result<Box<HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [http, https, cert, key, upstream, threads] = args.as_slice() else {
        eprintln!("usage: bare_pingora HTTP_ADDR HTTPS_ADDR CERT KEY UPSTREAM THREADS");
        std::process::exit(2);
    };
    let Ok(threads) = threads.parse::<usize>() else {
        eprintln!("bare_pingora: THREADS must be a number, not {threads:?}");
        std::process::exit(2);
    };
    let Ok(upstream) = upstream.parse::<std::net::SocketAddr>() else {
        eprintln!("bare_pingora: UPSTREAM must be an IP:port, not {upstream:?}");
        std::process::exit(2);
    };
    let conf = ServerConf {
        threads,
        work_stealing: false,
        // Palisade's `[server] upstream_keepalive` default.
        upstream_keepalive_pool_size: 1024,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();

    let bare = Bare {
        peer: HttpPeer::new(upstream, false, String::new()),
    };
    let mut service = pingora_proxy::http_proxy_service(&server.configuration, bare);
    service.add_tcp(http);
    let mut tls = match TlsSettings::intermediate(cert, key) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("bare_pingora: cannot load {cert} and {key}: {e}");
            std::process::exit(1);
        }
    };
    tls.enable_h2();
    service.add_tls_with_settings(https, None, tls);
    server.add_service(service);
    server.run_forever();
}
