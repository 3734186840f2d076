//! A minimal HTTP/1.1 GET client for loopback use (devnet, load, tests,
//! monitor): enough to read the node's own JSON API without pulling an HTTP
//! client stack into the binary.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context};

/// Bytes of a response body at most.
pub const HTTP_BODY_BYTES_MAX: usize = 16 << 20;

/// GETs `path` from `addr`; returns (status code, body).
pub fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    get_timeout(addr, path, Duration::from_secs(10))
}

/// [`get`] giving up after `timeout` (connect and each read).
pub fn get_timeout(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout.min(Duration::from_secs(5)))
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.take(HTTP_BODY_BYTES_MAX as u64).read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("malformed HTTP response from {addr}")
    };
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("malformed status line from {addr}"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Ok((code, body))
}

fn dechunk(mut b: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    loop {
        let Some((len, rest)) = b.split_once("\r\n") else {
            bail!("malformed chunked body")
        };
        let n = usize::from_str_radix(len.trim(), 16).context("malformed chunk length")?;
        if n == 0 {
            return Ok(out);
        }
        if rest.len() < n {
            bail!("truncated chunk");
        }
        out.push_str(&rest[..n]);
        b = rest[n..].trim_start_matches("\r\n");
    }
}

/// GETs and parses JSON, failing on a non-200 status.
pub fn get_json(addr: SocketAddr, path: &str) -> anyhow::Result<serde_json::Value> {
    let (code, body) = get(addr, path)?;
    if code != 200 {
        bail!("GET {path} from {addr}: HTTP {code}: {body}");
    }
    serde_json::from_str(&body).with_context(|| format!("GET {path}: not JSON: {body}"))
}
