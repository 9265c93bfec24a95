//! The node's sharded registry: every session by id, user → sessions, channel → sessions.
//!
//! Sessions live in [`SESSION_SHARDS`] mutex-guarded maps chosen by id. The shards double as the
//! slots of the heartbeat wheel (one shard visited per tick) and as the unit of a broadcast
//! walk, so no lock is ever held over all sessions at once. Users and channels are `DashMap`s.
//! A channel reports when it gains its first or loses its last local subscriber, which is when a
//! cluster node subscribes or unsubscribes on the bus.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
};

use dashmap::DashMap;
use parking_lot::Mutex;
use pushgate_protocol::{ChannelName, UserId};
use smallvec::SmallVec;

use crate::session::{SessionHandle, SessionId};

/// Shards of the session map: enough that a shard's lock is held briefly even at 100k
/// sessions (~400 per shard), and that the heartbeat wheel ticks every `heartbeat / 256`.
pub const SESSION_SHARDS: usize = 256;

type Sessions = HashMap<SessionId, SessionHandle>;

/// Sessions of one user on this node; most users have one or two devices.
pub type UserSessions = SmallVec<[SessionHandle; 2]>;

#[derive(Debug)]
pub struct Registry {
    shards: Box<[Mutex<Sessions>]>,
    users: DashMap<UserId, UserSessions>,
    channels: DashMap<ChannelName, Sessions>,
    len: AtomicUsize,
    boot: u64,
    next: AtomicU64,
}

impl Registry {
    pub fn new() -> Self {
        Self {
            shards: (0..SESSION_SHARDS).map(|_| Mutex::new(Sessions::new())).collect(),
            users: DashMap::new(),
            channels: DashMap::new(),
            len: AtomicUsize::new(0),
            // Ids from different runs of a node must not collide in presence or logs.
            boot: u64::from(rand::random::<u32>()) << 32,
            next: AtomicU64::new(1),
        }
    }

    /// A fresh session id.
    pub fn next_id(&self) -> SessionId {
        self.boot | (self.next.fetch_add(1, Ordering::Relaxed) & 0xFFFF_FFFF)
    }

    fn shard(&self, id: SessionId) -> &Mutex<Sessions> {
        &self.shards[(id as usize) % SESSION_SHARDS]
    }

    pub fn insert(&self, session: &SessionHandle) {
        self.shard(session.id()).lock().insert(session.id(), session.clone());
        self.users.entry(session.shared().user.clone()).or_default().push(session.clone());
        self.len.fetch_add(1, Ordering::Relaxed);
    }

    /// Removes a session and its channel subscriptions. Returns the channels that lost their
    /// last local subscriber.
    pub fn remove(&self, session: &SessionHandle, channels: &[ChannelName]) -> Vec<ChannelName> {
        if self.shard(session.id()).lock().remove(&session.id()).is_none() {
            return Vec::new();
        }
        self.len.fetch_sub(1, Ordering::Relaxed);
        self.users.remove_if_mut(&session.shared().user, |_, sessions| {
            sessions.retain(|s| s.id() != session.id());
            sessions.is_empty()
        });
        channels.iter().filter(|c| self.unsubscribe(c, session.id())).cloned().collect()
    }

    /// Adds a subscriber; returns true when it is the channel's first on this node.
    pub fn subscribe(&self, channel: &ChannelName, session: &SessionHandle) -> bool {
        let mut entry = self.channels.entry(channel.clone()).or_default();
        let first = entry.is_empty();
        entry.insert(session.id(), session.clone());
        first
    }

    /// Removes a subscriber; returns true when the channel has no subscriber left on this node.
    pub fn unsubscribe(&self, channel: &ChannelName, id: SessionId) -> bool {
        self.channels
            .remove_if_mut(channel, |_, subscribers| {
                subscribers.remove(&id);
                subscribers.is_empty()
            })
            .is_some()
    }

    /// Sessions on this node.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Channels with at least one subscriber on this node.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Calls `f` for each session of shard `index` (the heartbeat wheel's slot), outside the
    /// shard's lock (`f` may write to sockets).
    pub fn for_each_in_shard(&self, index: usize, f: impl FnMut(&SessionHandle)) {
        let sessions: SmallVec<[SessionHandle; 64]> =
            self.shards[index % SESSION_SHARDS].lock().values().cloned().collect();
        sessions.iter().for_each(f);
    }

    /// Calls `f` for every session, one shard at a time.
    pub fn for_each(&self, mut f: impl FnMut(&SessionHandle)) {
        for index in 0..SESSION_SHARDS {
            self.for_each_in_shard(index, &mut f);
        }
    }

    /// The subscribers of `channel` on this node.
    pub fn subscribers(&self, channel: &ChannelName) -> Vec<SessionHandle> {
        self.channels.get(channel).map(|s| s.values().cloned().collect()).unwrap_or_default()
    }

    /// The sessions of `user` on this node.
    pub fn user_sessions(&self, user: &str) -> UserSessions {
        self.users.get(user).map(|s| s.clone()).unwrap_or_default()
    }

    /// Every session, for a drain.
    pub fn snapshot(&self) -> Vec<SessionHandle> {
        let mut all = Vec::with_capacity(self.len());
        for shard in &self.shards {
            all.extend(shard.lock().values().cloned());
        }
        all
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(registry: &Registry, user: &str) -> SessionHandle {
        SessionHandle::new(registry.next_id(), UserId::new(user).unwrap(), None, 0, 0, 0)
    }

    #[test]
    fn users_and_channels_follow_sessions() {
        let r = Registry::new();
        let (a1, a2, b) = (session(&r, "a"), session(&r, "a"), session(&r, "b"));
        for s in [&a1, &a2, &b] {
            r.insert(s);
        }
        assert_eq!(r.len(), 3);
        assert_eq!(r.user_sessions("a").len(), 2);
        let news = ChannelName::new("news").unwrap();
        assert!(r.subscribe(&news, &a1));
        assert!(!r.subscribe(&news, &b));
        assert_eq!(r.subscribers(&news).len(), 2);
        assert!(r.remove(&a1, std::slice::from_ref(&news)).is_empty());
        assert_eq!(r.remove(&b, std::slice::from_ref(&news)), vec![news.clone()]);
        assert_eq!(r.channel_count(), 0);
        assert_eq!(r.user_sessions("a").len(), 1);
        assert!(r.user_sessions("b").is_empty());
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn removing_twice_is_harmless() {
        let r = Registry::new();
        let s = session(&r, "a");
        r.insert(&s);
        r.remove(&s, &[]);
        r.remove(&s, &[]);
        assert_eq!(r.len(), 0);
    }
}
