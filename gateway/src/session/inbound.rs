//! The inbound half of a session: reading from the socket into the per-thread scratch buffer,
//! decoding and reassembling frames, the rate limit, and answering client requests.

use std::{borrow::Cow, io};

use bytes::Bytes;
use pushgate_protocol::{
    ClientFrame, ClientRequest, CloseCode, ErrorCode, ServerFrame,
    ws::{self, Message, OpCode, Violation},
};
use tokio::net::TcpStream;

use super::{CloseRequest, Phase, Role, SCRATCH, Session, rate::Verdict};

impl Session {
    /// One read from the socket, then every complete frame in it. `Err` ends the session
    /// (EOF or a socket error).
    pub(super) fn read_some(&mut self, stream: &TcpStream) -> io::Result<()> {
        if self.leftover.is_empty() {
            SCRATCH.with_borrow_mut(|scratch| {
                let n = match stream.try_read(scratch) {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) => return Err(e),
                };
                self.take_in(&mut scratch[..n]);
                Ok(())
            })
        } else {
            // An incomplete frame: read the rest straight behind it.
            let want = match ws::decode_head(&self.leftover, true, self.max_message) {
                Ok(Some(head)) => head.frame_len(),
                _ => ws::MAX_HEAD_LEN,
            };
            self.leftover.reserve(want.saturating_sub(self.leftover.len()).max(4096));
            match stream.try_read_buf(&mut self.leftover) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
            self.take_in_leftover();
            Ok(())
        }
    }

    /// One read straight from the socket, without the runtime's readiness (which `try_read`
    /// checks first): for a session unparked because its socket turned readable, which the
    /// runtime, having just taken the socket back, may not know yet. What the parking lot read
    /// for the session (in `leftover`) is taken in first, whatever the read finds — even at EOF,
    /// so a client's last frames count. `Err` ends the session.
    pub(super) fn read_unprompted(&mut self, stream: &TcpStream) -> io::Result<()> {
        SCRATCH.with_borrow_mut(|scratch| {
            let read = match rustix::net::recv(stream, &mut scratch[..], rustix::net::RecvFlags::empty()) {
                Ok((0, _)) => Err(io::ErrorKind::UnexpectedEof.into()),
                Ok((n, _)) => Ok(n),
                Err(rustix::io::Errno::AGAIN) => Ok(0),
                Err(e) => Err(e.into()),
            };
            let n = *read.as_ref().unwrap_or(&0);
            if self.leftover.is_empty() {
                if n > 0 {
                    self.take_in(&mut scratch[..n]);
                }
            } else {
                self.leftover.extend_from_slice(&scratch[..n]);
                self.take_in_leftover();
            }
            read.map(drop)
        })
    }

    /// Handles the frames in freshly read `bytes`, keeping an incomplete one.
    fn take_in(&mut self, bytes: &mut [u8]) {
        self.handle.heard(self.node.clock.now_ms());
        match self.process(bytes) {
            Ok(used) if used < bytes.len() => self.leftover.extend_from_slice(&bytes[used..]),
            Ok(_) => {}
            Err(v) => self.violation(v),
        }
    }

    /// Handles the frames completed in `leftover`, keeping what is still incomplete.
    fn take_in_leftover(&mut self) {
        self.handle.heard(self.node.clock.now_ms());
        let mut buf = std::mem::take(&mut self.leftover);
        match self.process(&mut buf) {
            Ok(used) if used < buf.len() => {
                buf.drain(..used);
                self.leftover = buf;
            }
            Ok(_) => {}
            Err(v) => self.violation(v),
        }
    }

    /// Handles every complete frame at the start of `buf` (unmasking in place); returns the
    /// bytes used. Stops at an incomplete frame, or once the session is closing.
    pub(super) fn process(&mut self, buf: &mut [u8]) -> Result<usize, Violation> {
        let mut at = 0;
        while self.phase != Phase::Done {
            let Some(head) = ws::decode_head(&buf[at..], true, self.max_message)? else {
                break;
            };
            if buf.len() - at < head.frame_len() {
                break;
            }
            let payload = &mut buf[at + head.head_len..at + head.frame_len()];
            if let Some(key) = head.mask {
                ws::apply_mask(payload, key);
            }
            at += head.frame_len();
            if let Some(message) = self.assembler.push(&head, payload, self.max_message)? {
                self.on_message(message);
            }
        }
        Ok(at)
    }

    fn on_message(&mut self, message: Message<'_>) {
        if let Message::Close(frame) = message {
            return self.on_client_close(frame);
        }
        if self.phase != Phase::Open {
            // Closing: only the client's Close matters now.
            return;
        }
        if let Message::Pong(_) = message {
            return;
        }
        if matches!(self.role, Role::Client(_)) {
            let now = self.node.clock.now_ms();
            let config = &self.node.config;
            match self.rate.admit(now, config.client_rate_per_s, config.client_rate_burst) {
                Verdict::Allow => {}
                Verdict::Refuse => {
                    return self.reply_error(ErrorCode::RateLimited, "too many frames; slow down".into(), None);
                }
                Verdict::Close => {
                    return self.begin_close(CloseRequest::new(CloseCode::RateLimited, "too many frames"));
                }
            }
        }
        match (message, &self.role) {
            (Message::Ping(payload), _) => {
                self.node.metrics.frame_in("ws_ping");
                self.reply(ws::encode(OpCode::Pong, payload));
            }
            (Message::Text(text), Role::Echo) => self.reply(ws::encode(OpCode::Text, text.as_bytes())),
            (Message::Binary(data), Role::Echo) => self.reply(ws::encode(OpCode::Binary, &data)),
            (Message::Text(text), Role::Client(_)) => match ClientRequest::decode(&text) {
                Ok(request) => self.on_request(request),
                Err(e) => self.reply_error(e.code, e.message, e.id.as_deref()),
            },
            (Message::Binary(_), Role::Client(_)) => {
                self.reply_error(ErrorCode::BadFrame, "binary frames are not supported; send JSON text".into(), None)
            }
            (Message::Pong(_) | Message::Close(_), _) => {}
        }
    }

    fn on_request(&mut self, request: ClientRequest) {
        let Role::Client(state) = &mut self.role else {
            return;
        };
        let node = &self.node;
        let id = request.id.as_deref().map(Cow::Borrowed);
        let reply: Bytes = match request.frame {
            ClientFrame::Subscribe { channel, token } => {
                node.metrics.frame_in("subscribe");
                if state.subscriptions.contains(&channel) {
                    ServerFrame::Subscribed { channel: channel.as_str().into(), id }.encode()
                } else if state.subscriptions.len() >= node.config.max_channels_per_session {
                    let message = format!("at most {} channels per session", node.config.max_channels_per_session);
                    ServerFrame::Error { code: ErrorCode::TooManyChannels, message: message.into(), id }.encode()
                } else {
                    let verdict = if state.patterns.iter().any(|p| p.matches(&channel)) {
                        Ok(())
                    } else {
                        match token {
                            Some(token) => node
                                .auth
                                .verify_channel(&token, &self.handle.shared().user, &channel)
                                .map_err(|e| e.to_string()),
                            None => Err("the session token does not allow this channel; send a channel token".into()),
                        }
                    };
                    match verdict {
                        Ok(()) => {
                            let first = node.registry.subscribe(&channel, &self.handle);
                            node.metrics.channels.set(node.registry.channel_count() as f64);
                            let frame = ServerFrame::Subscribed { channel: channel.as_str().into(), id }.encode();
                            // The reply goes out once the node hears the channel (cluster: its bus
                            // subscription is in place).
                            let now = crate::cluster::channel_subscribed(node, &self.handle, &channel, first, frame);
                            state.subscriptions.push(channel);
                            if let Some(frame) = now {
                                self.reply(frame);
                            }
                            return;
                        }
                        Err(why) => ServerFrame::Error {
                            code: ErrorCode::Forbidden,
                            message: format!("not allowed to subscribe to {channel}: {why}").into(),
                            id,
                        }
                        .encode(),
                    }
                }
            }
            ClientFrame::Unsubscribe { channel } => {
                node.metrics.frame_in("unsubscribe");
                if let Some(at) = state.subscriptions.iter().position(|c| c == &channel) {
                    state.subscriptions.swap_remove(at);
                    if node.registry.unsubscribe(&channel, self.handle.id()) {
                        crate::cluster::channel_closed(node, &channel);
                    }
                    node.metrics.channels.set(node.registry.channel_count() as f64);
                }
                ServerFrame::Unsubscribed { channel: channel.as_str().into(), id }.encode()
            }
            ClientFrame::Ack { seq } => {
                node.metrics.frame_in("ack");
                if seq > state.cursor {
                    let message = format!("ack {seq} is above the highest seq sent ({})", state.cursor);
                    ServerFrame::Error { code: ErrorCode::BadFrame, message: message.into(), id }.encode()
                } else {
                    let shared = self.handle.shared();
                    node.durable.book.ack(&shared.user, shared.device.as_ref(), seq);
                    state.acked = true;
                    return;
                }
            }
            ClientFrame::Ping => {
                node.metrics.frame_in("ping");
                ServerFrame::Pong { id }.encode()
            }
        };
        self.reply(reply);
    }
}
