//! `ak-outpost healthcheck`: a container HEALTHCHECK probe. Sends `HEAD
//! /outpost.goauthentik.io/ping` to the given listener and succeeds on a status below 400. It
//! uses no other module of the crate.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// Probes `addr` (a wildcard address means this host). Returns the status code.
pub fn probe(addr: SocketAddr) -> Result<u16, String> {
    let target = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(v6) if v6.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    };
    let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(3))
        .map_err(|e| format!("cannot connect to {target}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    let req = format!(
        "HEAD /outpost.goauthentik.io/ping HTTP/1.1\r\nHost: {target}\r\nUser-Agent: goauthentik.io/healthcheck\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).map_err(|e| e.to_string())?;
    let line = std::str::from_utf8(&buf[..n]).unwrap_or_default();
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| "no HTTP status in the answer".to_string())
}
