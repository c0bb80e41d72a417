//! The outpost websocket: HELLO on connect and every 10 s, TRIGGER_UPDATE → refresh,
//! SESSION_END → that provider session stops working at once. TLS is the process's one trust
//! store (`provider::client_tls`); the handshake has a deadline, and a connection silent for
//! three HELLO intervals counts as dead. Reconnects with capped exponential backoff and keeps
//! logs quiet while authentik is away. It refreshes nothing itself: it wakes the refresh loop
//! and ends sessions in `state::outpost`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use url::{Host, Url};

use crate::provider::client_tls;
use crate::source::authentik::api::user_agent;
use crate::state::outpost::Outpost;

pub const HELLO: i64 = 1;
pub const TRIGGER_UPDATE: i64 = 2;
pub const SESSION_END: i64 = 4;
/// Time between HELLOs (authentik marks an outpost unhealthy after ~1.5×).
pub const HELLO_INTERVAL: Duration = Duration::from_secs(10);
/// Longest wait for the TCP connection, TLS and the upgrade together (as authentik's outpost).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that brings no frame for this long is dead and is replaced: authentik acks
/// every HELLO, so three missed acks in a row mean nobody is listening.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3 * HELLO_INTERVAL.as_secs());
/// Longest wait to hand one frame to the connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// `http(s)://host/prefix/` → `ws(s)://host/prefix/ws/outpost/<pk>/?<query>&instance_uuid=…`.
pub fn websocket_url(base: &Url, outpost_pk: &str, instance: &str, attempt: u32) -> Option<Url> {
    let mut u = base.clone();
    let scheme = match base.scheme() {
        "https" => "wss",
        _ => "ws",
    };
    u.set_scheme(scheme).ok()?;
    let path = format!("{}ws/outpost/{outpost_pk}/", base.path());
    u.set_path(&path);
    let mut pairs: Vec<(String, String)> = base
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    pairs.push(("instance_uuid".into(), instance.into()));
    if attempt > 0 {
        pairs.push(("attempt".into(), attempt.to_string()));
    }
    pairs.sort();
    u.set_query(None);
    {
        let mut q = u.query_pairs_mut();
        for (k, v) in &pairs {
            q.append_pair(k, v);
        }
    }
    Some(u)
}

fn hello(instance: &str) -> String {
    let hostname = std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    json!({
        "instruction": HELLO,
        "args": {
            "version": env!("CARGO_PKG_VERSION"),
            "buildHash": "",
            "uuid": instance,
            "golangVersion": "rust (ak-outpost)",
            "opensslEnabled": false,
            "opensslVersion": "",
            "fipsEnabled": false,
            "hostname": hostname,
        }
    })
    .to_string()
}

/// Runs the websocket forever: connects, says hello, handles instructions, reconnects.
pub async fn run(
    base: Url,
    token: String,
    outpost_pk: String,
    instance: String,
    insecure: bool,
    outpost: Arc<Outpost>,
    refresh: Arc<Notify>,
) {
    let mut attempt: u32 = 0;
    let mut delay = Duration::from_secs(1);
    loop {
        let Some(url) = websocket_url(&base, &outpost_pk, &instance, attempt) else {
            tracing::error!("cannot build the websocket URL from AUTHENTIK_HOST");
            return;
        };
        match session(&url, &token, &instance, insecure, &outpost, &refresh).await {
            Ok(()) => {
                delay = Duration::from_secs(1);
                tracing::info!("websocket closed by authentik; reconnecting");
            }
            Err(e) => {
                if attempt < 3 || attempt.is_multiple_of(20) {
                    tracing::warn!(error = %e, retry_in_s = delay.as_secs(), "websocket to authentik unavailable");
                } else {
                    tracing::debug!(error = %e, "websocket to authentik unavailable");
                }
            }
        }
        crate::state::metrics::set_connected(false);
        attempt = attempt.saturating_add(1);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(300));
    }
}

async fn session(
    url: &Url,
    token: &str,
    instance: &str,
    insecure: bool,
    outpost: &Outpost,
    refresh: &Notify,
) -> Result<(), String> {
    let req = handshake_request(url, token)?;
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let tcp = connect_tcp(url, deadline).await?;
    if url.scheme() == "wss" {
        let config = client_tls::client_config(insecure).map_err(|e| e.to_string())?;
        let name = server_name(url)?;
        let tls = within(
            deadline,
            "TLS handshake",
            tokio_rustls::TlsConnector::from(config).connect(name, tcp),
        )
        .await?;
        let ws = within(deadline, "websocket upgrade", upgrade(req, tls)).await?;
        converse(ws, instance, outpost, refresh).await
    } else {
        let ws = within(deadline, "websocket upgrade", upgrade(req, tcp)).await?;
        converse(ws, instance, outpost, refresh).await
    }
}

/// The upgrade request: authentik's bearer token and the outpost's user agent.
fn handshake_request(url: &Url, token: &str) -> Result<Request, String> {
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| e.to_string())?;
    let h = req.headers_mut();
    h.insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| e.to_string())?,
    );
    h.insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_str(&user_agent()).map_err(|e| e.to_string())?,
    );
    Ok(req)
}

/// `fut`, or a timeout error naming `step` once `deadline` passes.
async fn within<T, E: std::fmt::Display>(
    deadline: Instant,
    step: &str,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    tokio::time::timeout_at(deadline, fut)
        .await
        .map_err(|_| format!("{step} timed out"))?
        .map_err(|e| format!("{step}: {e}"))
}

/// The TCP connection to the websocket's host, within [`client_tls::CONNECT_TIMEOUT`].
async fn connect_tcp(url: &Url, deadline: Instant) -> Result<TcpStream, String> {
    let port = url
        .port_or_known_default()
        .ok_or("the websocket URL has no port")?;
    let connect = async {
        match url.host() {
            Some(Host::Domain(d)) => TcpStream::connect((d, port)).await,
            Some(Host::Ipv4(ip)) => TcpStream::connect((ip, port)).await,
            Some(Host::Ipv6(ip)) => TcpStream::connect((ip, port)).await,
            None => Err(std::io::Error::other("the websocket URL has no host")),
        }
    };
    let deadline = deadline.min(Instant::now() + client_tls::CONNECT_TIMEOUT);
    let tcp = within(deadline, "connect", connect).await?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// The name the server's certificate must carry: the URL's host name or IP address.
fn server_name(url: &Url) -> Result<ServerName<'static>, String> {
    match url.host() {
        Some(Host::Domain(d)) => ServerName::try_from(d.to_string()).map_err(|e| e.to_string()),
        Some(Host::Ipv4(ip)) => Ok(ServerName::IpAddress(std::net::IpAddr::V4(ip).into())),
        Some(Host::Ipv6(ip)) => Ok(ServerName::IpAddress(std::net::IpAddr::V6(ip).into())),
        None => Err("the websocket URL has no host".into()),
    }
}

/// The websocket upgrade over an open connection.
async fn upgrade<S>(req: Request, stream: S) -> Result<WebSocketStream<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio_tungstenite::client_async_with_config(req, stream, None)
        .await
        .map(|(ws, _resp)| ws)
}

/// One connected session: HELLO now and every [`HELLO_INTERVAL`], instructions handled as
/// they come. Ends when authentik closes (`Ok`), or on an error, a write that does not go
/// out within [`WRITE_TIMEOUT`], or [`IDLE_TIMEOUT`] without any frame (authentik answers
/// every HELLO, so silence means the connection is dead).
async fn converse<S>(
    ws: WebSocketStream<S>,
    instance: &str,
    outpost: &Outpost,
    refresh: &Notify,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut tx, mut rx) = ws.split();
    let mut send = async |m: Message| {
        tokio::time::timeout(WRITE_TIMEOUT, tx.send(m))
            .await
            .map_err(|_| "write timed out".to_string())?
            .map_err(|e| e.to_string())
    };
    send(Message::text(hello(instance))).await?;
    crate::state::metrics::set_connected(true);
    tracing::info!("websocket to authentik connected");
    let mut ticker = tokio::time::interval(HELLO_INTERVAL);
    ticker.tick().await;
    let idle = tokio::time::sleep(IDLE_TIMEOUT);
    tokio::pin!(idle);
    loop {
        tokio::select! {
            _ = ticker.tick() => send(Message::text(hello(instance))).await?,
            () = &mut idle => {
                return Err(format!("no frame from authentik for {} s", IDLE_TIMEOUT.as_secs()));
            }
            msg = rx.next() => {
                let msg = match msg {
                    None => return Ok(()),
                    Some(Err(e)) => return Err(e.to_string()),
                    Some(Ok(m)) => m,
                };
                idle.as_mut().reset(Instant::now() + IDLE_TIMEOUT);
                match msg {
                    Message::Text(t) => handle(t.as_str(), outpost, refresh),
                    Message::Ping(p) => send(Message::Pong(p)).await?,
                    Message::Close(_) => return Ok(()),
                    _ => {}
                }
            }
        }
    }
}

/// Acts on one server message.
pub fn handle(text: &str, outpost: &Outpost, refresh: &Notify) {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        tracing::debug!("websocket message is not JSON");
        return;
    };
    match v.get("instruction").and_then(Value::as_i64) {
        Some(TRIGGER_UPDATE) => {
            tracing::info!("authentik asked for a configuration refresh");
            refresh.notify_one();
        }
        Some(SESSION_END) => match v
            .get("args")
            .and_then(|a| a.get("session_id"))
            .and_then(Value::as_str)
        {
            Some(sid) if !sid.is_empty() => {
                tracing::info!("authentik ended a session");
                outpost.end_session(sid);
            }
            _ => tracing::warn!("SESSION_END without a session_id"),
        },
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::authentik::AuthentikEnv;
    use tokio_tungstenite::tungstenite::protocol::Role;

    fn outpost() -> Outpost {
        let env = AuthentikEnv::from_lookup(|k| match k {
            "AUTHENTIK_HOST" => Some("http://ak.example/".into()),
            "AUTHENTIK_TOKEN" => Some("t".into()),
            _ => None,
        })
        .unwrap();
        Outpost::new(env.empty_runtime())
    }

    /// A session over an in-memory pipe; the server side reads HELLOs and acks them when
    /// `ack`, until `for_how_long` of (paused) time has passed, then closes. Returns how the
    /// session ended and the HELLOs the server saw.
    async fn session_against(ack: bool, for_how_long: Duration) -> (Result<(), String>, usize) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        let mut server = WebSocketStream::from_raw_socket(server, Role::Server, None).await;
        let server = tokio::spawn(async move {
            let mut hellos = 0;
            let end = Instant::now() + for_how_long;
            while let Ok(Some(Ok(m))) = tokio::time::timeout_at(end, server.next()).await {
                if matches!(m, Message::Text(_)) {
                    hellos += 1;
                    if ack {
                        let _ = server
                            .send(Message::text(r#"{"instruction":0,"args":{}}"#))
                            .await;
                    }
                }
            }
            let _ = server.close(None).await;
            hellos
        });
        let ended = converse(client, "i", &outpost(), &Notify::new()).await;
        (ended, server.await.unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_given_up_after_three_hello_intervals() {
        let started = Instant::now();
        let (ended, hellos) = session_against(false, Duration::from_secs(600)).await;
        let err = ended.unwrap_err();
        assert!(err.contains("no frame from authentik"), "{err}");
        assert_eq!(started.elapsed(), IDLE_TIMEOUT);
        assert!((3..=4).contains(&hellos), "{hellos}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_acked_connection_lives_past_the_idle_deadline() {
        let (ended, hellos) = session_against(true, Duration::from_secs(95)).await;
        assert_eq!(ended, Ok(()), "closed by the server, not given up");
        assert_eq!(hellos, 10);
    }

    #[test]
    fn websocket_urls_follow_authentik() {
        let pk = "23470845-7263-4fe3-bd79-ec1d7bf77d77";
        let u = websocket_url(
            &Url::parse("http://localhost:9000/?foo=bar").unwrap(),
            pk,
            "i",
            0,
        )
        .unwrap();
        assert_eq!(
            u.as_str(),
            format!("ws://localhost:9000/ws/outpost/{pk}/?foo=bar&instance_uuid=i")
        );
        let u = websocket_url(
            &Url::parse("https://ak.example/foo/bar/").unwrap(),
            pk,
            "i",
            2,
        )
        .unwrap();
        assert_eq!(
            u.as_str(),
            format!("wss://ak.example/foo/bar/ws/outpost/{pk}/?attempt=2&instance_uuid=i")
        );
    }
}
