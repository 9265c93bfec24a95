//! A raw client over plain TCP, for what a well-behaved WebSocket library will not do: partial
//! handshakes, invalid UTF-8, oversized frames, never reading, never answering Pings.

use std::{net::SocketAddr, time::Duration};

use pushgate_protocol::ws::{self, OpCode};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

/// A frame as the raw client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub opcode: OpCode,
    pub payload: Vec<u8>,
    /// Bytes the frame took on the wire, header included.
    pub wire_len: usize,
}

impl RawFrame {
    /// The close code of a Close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == OpCode::Close && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.payload).unwrap_or("<binary>")
    }
}

pub struct RawClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

const KEY: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

impl RawClient {
    /// Opens a TCP connection without sending anything.
    pub async fn open(addr: SocketAddr) -> Self {
        Self { stream: TcpStream::connect(addr).await.expect("tcp connect"), buf: Vec::new() }
    }

    /// Opens a TCP connection whose receive buffer is `bytes` (the kernel doubles it), so that
    /// the server's writes to it fill its socket early.
    pub async fn open_with_receive_buffer(addr: SocketAddr, bytes: u32) -> Self {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        Self { stream: socket.connect(addr).await.expect("tcp connect"), buf: Vec::new() }
    }

    /// Sends a raw HTTP request and returns the response head and body as text (the body is
    /// read up to `content-length`).
    pub async fn http(addr: SocketAddr, request: &str) -> (u16, String, String) {
        let mut client = Self::open(addr).await;
        client.stream.write_all(request.as_bytes()).await.expect("write request");
        client.read_response().await
    }

    async fn read_response(&mut self) -> (u16, String, String) {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await.expect("response head");
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_string();
        let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status");
        let length = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0))
            })
            .unwrap_or(0);
        while self.buf.len() < head_end + length {
            if self.fill().await.is_err() {
                break;
            }
        }
        let body = String::from_utf8_lossy(&self.buf[head_end..(head_end + length).min(self.buf.len())]).to_string();
        self.buf.drain(..(head_end + length).min(self.buf.len()));
        (status, head, body)
    }

    /// Connects and completes the upgrade with `token`; panics unless the answer is 101.
    pub async fn connect(addr: SocketAddr, token: &str) -> Self {
        Self::upgrade(addr, &Self::upgrade_request(addr, token)).await
    }

    /// The upgrade request [`RawClient::connect`] sends.
    pub fn upgrade_request(addr: SocketAddr, token: &str) -> String {
        format!(
            "GET /ws?token={token} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
    }

    /// Sends `request` and panics unless the answer is `101 Switching Protocols` with the
    /// RFC 6455 accept key of the sample key `dGhlIHNhbXBsZSBub25jZQ==`.
    pub async fn upgrade(addr: SocketAddr, request: &str) -> Self {
        let mut client = Self::open(addr).await;
        client.stream.write_all(request.as_bytes()).await.expect("write upgrade");
        client.expect_upgraded().await;
        client
    }

    /// Reads the answer to an upgrade request this client has sent; panics unless it is `101`
    /// with the accept key of the sample key. Returns the answer's length on the wire.
    pub async fn expect_upgraded(&mut self) -> usize {
        let (status, head, body) = self.read_response().await;
        assert_eq!(status, 101, "upgrade refused: {head}{body}");
        assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "accept key: {head}");
        head.len()
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Sends one masked frame.
    pub async fn send(&mut self, opcode: OpCode, fin: bool, payload: &[u8]) {
        let frame = ws::encode_client(opcode, fin, payload, KEY);
        self.stream.write_all(&frame).await.expect("send frame");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send(OpCode::Text, true, text.as_bytes()).await;
    }

    /// The next frame from the server, or `None` when the connection ended or `within` passed.
    pub async fn read_frame(&mut self, within: Duration) -> Option<RawFrame> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Ok(Some(head)) = ws::decode_head(&self.buf, false, usize::MAX)
                && self.buf.len() >= head.frame_len()
            {
                let payload = self.buf[head.head_len..head.frame_len()].to_vec();
                self.buf.drain(..head.frame_len());
                return Some(RawFrame { opcode: head.opcode, payload, wire_len: head.frame_len() });
            }
            match tokio::time::timeout_at(deadline, self.fill()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    /// Reads frames until a Close frame (returning its code) or the end of the connection.
    pub async fn read_until_close(&mut self, within: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_frame(left).await {
                Some(frame) if frame.opcode == OpCode::Close => return frame.close_code(),
                Some(_) => continue,
                None => return None,
            }
        }
    }

    /// Waits until the server closes the TCP connection (EOF or reset), discarding data.
    pub async fn wait_closed(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
