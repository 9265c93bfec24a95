//! Resuming (SPEC §6): after `welcome` a session replays its inbox after its cursor, page by
//! page, before any live message; once live, a durable frame that arrives ahead of a missing
//! `seq` waits while the missing ones are read from the store. So a session never sees the same
//! `seq` twice and never sees a gap.
//!
//! Memory stays bounded for any backlog: one page is read at a time, and the next only once the
//! previous one is mostly written. While a replay runs, durable frames that do not fit in the
//! outbox are left to the replay (the store has them) instead of closing the session.

use std::{
    borrow::Cow,
    collections::VecDeque,
    task::{Context, Poll},
};

use pushgate_dispatcher::store::InboxEntry;
use pushgate_protocol::{CloseCode, ServerFrame};

use super::{CloseRequest, Outbound, Role, Session};
use crate::durable::Fetch;

/// Start reading the next page once fewer frames than this wait to be written.
const NEXT_PAGE_BELOW: usize = 16;

/// An inbox read in progress.
pub struct CatchUp {
    /// Read up to (not including) this `seq`; `None` for the replay of everything.
    before: Option<u64>,
    fetch: Option<Fetch>,
    /// The store has nothing for this round (the cursor lookup found no backlog): it ends
    /// without a read.
    nothing_stored: bool,
    /// Live frames waiting behind the read, in arrival order.
    held: VecDeque<Outbound>,
}

impl std::fmt::Debug for CatchUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatchUp").field("before", &self.before).field("held", &self.held.len()).finish()
    }
}

impl CatchUp {
    /// The replay after connecting; `backlog` says whether the inbox has anything after the
    /// cursor. Without one, the first round reads nothing, but still ends as a replay round does:
    /// durable frames that did not fit in the outbox meanwhile start another (which reads).
    pub fn resume(backlog: bool) -> Self {
        Self { before: None, fetch: None, nothing_stored: !backlog, held: VecDeque::new() }
    }

    /// Another replay round.
    fn replay() -> Self {
        Self::resume(true)
    }
}

impl Session {
    /// Whether frames may be taken from the outbox (no inbox read under way).
    pub(super) fn is_live(&self) -> bool {
        match &self.role {
            Role::Client(state) => state.catch_up.is_none(),
            Role::Echo => true,
        }
    }

    /// Whether the inbox read under way, if any, is a replay round that reads nothing (the cursor
    /// lookup found no backlog): it ends at its first poll, without the store or a waker.
    pub(super) fn catch_up_reads_nothing(&self) -> bool {
        match &self.role {
            Role::Client(state) => state.catch_up.as_ref().is_none_or(|c| c.nothing_stored),
            Role::Echo => true,
        }
    }

    /// Starts a replay round from the cursor (the outbox is already marked as replaying).
    pub(super) fn start_catch_up(&mut self) {
        if let Role::Client(state) = &mut self.role
            && state.catch_up.is_none()
        {
            state.catch_up = Some(Box::new(CatchUp::replay()));
        }
    }

    /// Drives an inbox read; returns whether anything happened.
    pub(super) fn poll_catch_up(&mut self, cx: &mut Context<'_>) -> bool {
        let Role::Client(state) = &mut self.role else { return false };
        let Some(catch_up) = state.catch_up.as_mut() else { return false };
        if std::mem::take(&mut catch_up.nothing_stored) {
            self.on_page(Vec::new());
            return true;
        }
        if catch_up.fetch.is_none() {
            if self.writing.len() >= NEXT_PAGE_BELOW {
                return false;
            }
            let user = self.handle.shared().user.clone();
            catch_up.fetch = Some(self.node.durable.fetch(user, state.cursor, catch_up.before));
        }
        let Some(fetch) = catch_up.fetch.as_mut() else { return false };
        let page = match fetch.as_mut().poll(cx) {
            Poll::Pending => return false,
            Poll::Ready(page) => page,
        };
        catch_up.fetch = None;
        match page {
            Ok(entries) => self.on_page(entries),
            Err(e) => {
                tracing::warn!(error = %e, session = %self.handle.id_string(), "inbox read failed; closing");
                self.begin_close(CloseRequest::new(CloseCode::Internal, "inbox unavailable"));
            }
        }
        true
    }

    fn on_page(&mut self, entries: Vec<InboxEntry>) {
        let full = entries.len() >= self.node.durable.page as usize;
        let Role::Client(state) = &mut self.role else { return };
        for entry in entries {
            if entry.seq <= state.cursor {
                continue;
            }
            let frame = ServerFrame::Message {
                id: entry.id.as_str().into(),
                ts: entry.ts,
                data: Cow::Borrowed(&entry.data),
                seq: Some(entry.seq),
                channel: None,
            };
            self.writing.push_back(Outbound::control(frame.encode()));
            state.cursor = entry.seq;
        }
        if full {
            return; // More pages: the next read starts once these are mostly written.
        }
        let Some(catch_up) = state.catch_up.take() else { return };
        match catch_up.before {
            None => {
                if !self.handle.finish_replay() {
                    // Durable frames were left to the replay during this round: read again.
                    state.catch_up = Some(catch_up);
                }
            }
            Some(before) => {
                // Whatever is still missing below `before` has expired.
                state.cursor = state.cursor.max(before - 1);
                self.accept_live(catch_up.held);
            }
        }
    }

    /// Queues live frames for writing: durable duplicates (at or below the cursor) are dropped,
    /// and a durable frame ahead of a missing `seq` starts an inbox read, with it and everything
    /// after it held until the read is done.
    pub(super) fn accept_live(&mut self, mut frames: VecDeque<Outbound>) {
        let Role::Client(state) = &mut self.role else {
            self.writing.extend(frames);
            return;
        };
        while let Some(out) = frames.pop_front() {
            if out.seq == 0 {
                self.writing.push_back(out);
            } else if out.seq <= state.cursor {
                continue;
            } else if out.seq == state.cursor + 1 {
                state.cursor = out.seq;
                self.writing.push_back(out);
            } else {
                let before = out.seq;
                frames.push_front(out);
                state.catch_up =
                    Some(Box::new(CatchUp { before: Some(before), fetch: None, nothing_stored: false, held: frames }));
                return;
            }
        }
    }
}
