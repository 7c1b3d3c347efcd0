//! How hearth's own command line asks a running daemon something
//! (`hearth ps`): HTTP/1.1 over the daemon's Unix socket, with the admin
//! token the daemon left in its home. Small on purpose: one GET, one JSON
//! answer, no dependency on an HTTP client library.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::server::{admin_token_path, info_path, DaemonInfo};

/// `GET path` from the daemon running on `home`, as JSON.
pub fn get_json(home: &Path, path: &str) -> Result<Value> {
    let info: DaemonInfo = std::fs::read_to_string(info_path(home))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .with_context(|| {
            format!(
                "no hearth daemon is running on the home {} (start one with `hearth serve`)",
                home.display()
            )
        })?;
    let Some(socket) = info.socket else {
        bail!(
            "the daemon (pid {}) runs without a Unix socket; query {} instead",
            info.pid,
            info.url
        );
    };
    let token = std::fs::read_to_string(admin_token_path(home))
        .with_context(|| format!("reading the daemon's admin token in {}", home.display()))?;
    let mut s = UnixStream::connect(&socket).with_context(|| {
        format!(
            "connecting to the daemon at {} (is it still running?)",
            socket.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        token.trim()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .context("reading the daemon's answer")?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("the daemon's answer has no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("the daemon's answer has no status")?;
    if head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    }) {
        body = dechunk(&body)?;
    }
    let v: Value = serde_json::from_slice(&body).context("the daemon's answer is not JSON")?;
    if status != 200 {
        bail!("the daemon answered {status}: {v}");
    }
    Ok(v)
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let end = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("bad chunk")?;
        let size_text = std::str::from_utf8(&b[..end])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .context("bad chunk size")?;
        b = &b[end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}
