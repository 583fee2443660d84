//! A small "legacy app" for `make run`: it answers every request with JSON describing what it
//! received (so you can see what Palisade forwards), `/health` with 200, and it behaves like the
//! apps Palisade is put in front of: it announces itself with `Server` and `X-Powered-By` and
//! sets a session cookie without any flags.
//!
//! Usage: demo_backend [ADDR]   (default 127.0.0.1:3000). Standard library only.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into());
    let listener = match TcpListener::bind(&addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("demo_backend: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("demo_backend: listening on {addr}");
    for stream in listener.incoming().flatten() {
        thread::spawn(move || serve(stream));
    }
}

fn serve(stream: TcpStream) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("/").to_string();
        let mut headers = Vec::new();
        let mut content_length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
                if name == "content-length" {
                    content_length = value.parse().unwrap_or(0);
                }
                headers.push((name, value));
            }
        }
        let mut body = vec![0u8; content_length.min(16 * 1024 * 1024)];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (status, payload) = if target == "/health" {
            ("200 OK", "{\"status\":\"ok\"}".to_string())
        } else {
            let seen: Vec<String> = headers
                .iter()
                .filter(|(n, _)| n.starts_with("x-") || n == "host")
                .map(|(n, v)| format!("\"{}\":\"{}\"", escape(n), escape(v)))
                .collect();
            let payload = format!(
                "{{\"hello\":\"from the demo backend\",\"method\":\"{}\",\"target\":\"{}\",\"body_bytes\":{},\"headers\":{{{}}}}}",
                escape(&method),
                escape(&target),
                body.len(),
                seen.join(",")
            );
            ("200 OK", payload)
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nServer: DemoBackend/1.0\r\nX-Powered-By: PHP/5.6.40\r\nSet-Cookie: session=demo-{}; Path=/\r\n\r\n{payload}",
            payload.len(),
            std::process::id()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

fn escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            c if c.is_control() => vec![],
            c => vec![c],
        })
        .collect()
}
