//! The node's sharded registry: every session, found by its user; channel → sessions.
//!
//! Sessions live in [`SESSION_SHARDS`] mutex-guarded hash tables, each session in the shard and
//! the bucket its user's hash picks, so one table serves both "every session" and "the sessions
//! of a user" at 8 bytes per session (the handle; the user id is read from it). The shards double
//! as the slots of the heartbeat wheel (one shard visited per tick) and as the unit of a
//! broadcast walk, so no lock is ever held over all sessions at once. Channels are a `DashMap`.
//! A channel reports when it gains its first or loses its last local subscriber, which is when a
//! cluster node subscribes or unsubscribes on the bus.

use std::{
    collections::HashMap,
    hash::BuildHasher,
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
};

use dashmap::DashMap;
use hashbrown::{DefaultHashBuilder, HashTable};
use parking_lot::Mutex;
use pushgate_protocol::ChannelName;
use smallvec::SmallVec;

use crate::session::{SessionHandle, SessionId};

/// Shards of the session table: enough that a shard's lock is held briefly even at 100k
/// sessions (~400 per shard), and that the heartbeat wheel ticks every `heartbeat / 256`.
pub const SESSION_SHARDS: usize = 256;

/// One shard: sessions hashed by their user id (a user's devices share a hash).
type Shard = HashTable<SessionHandle>;

type Subscribers = HashMap<SessionId, SessionHandle>;

/// Sessions of one user on this node; most users have one or two devices.
pub type UserSessions = SmallVec<[SessionHandle; 2]>;

#[derive(Debug)]
pub struct Registry {
    shards: Box<[Mutex<Shard>]>,
    hasher: DefaultHashBuilder,
    channels: DashMap<ChannelName, Subscribers>,
    len: AtomicUsize,
    boot: u64,
    next: AtomicU64,
}

impl Registry {
    pub fn new() -> Self {
        Self {
            shards: (0..SESSION_SHARDS).map(|_| Mutex::new(Shard::new())).collect(),
            hasher: DefaultHashBuilder::default(),
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

    fn hash(&self, user: &str) -> u64 {
        self.hasher.hash_one(user)
    }

    /// The shard of a user's hash. Its bits 40–47: the table inside uses the low bits (bucket)
    /// and the top seven (tag), and a shard whose entries shared those would crowd its buckets.
    fn shard(&self, hash: u64) -> &Mutex<Shard> {
        &self.shards[(hash >> 40) as usize % SESSION_SHARDS]
    }

    pub fn insert(&self, session: &SessionHandle) {
        let hash = self.hash(session.user());
        self.shard(hash).lock().insert_unique(hash, session.clone(), |s| self.hash(s.user()));
        self.len.fetch_add(1, Ordering::Relaxed);
    }

    /// Removes a session and its channel subscriptions. Returns the channels that lost their
    /// last local subscriber.
    pub fn remove(&self, session: &SessionHandle, channels: &[ChannelName]) -> Vec<ChannelName> {
        let hash = self.hash(session.user());
        // The handle is dropped after the lock is released.
        let removed = self.shard(hash).lock().find_entry(hash, |s| s.id() == session.id()).ok().map(|e| e.remove().0);
        if removed.is_none() {
            return Vec::new();
        }
        self.len.fetch_sub(1, Ordering::Relaxed);
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
            self.shards[index % SESSION_SHARDS].lock().iter().cloned().collect();
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
        let hash = self.hash(user);
        self.shard(hash).lock().iter_hash(hash).filter(|s| s.user() == user).cloned().collect()
    }

    /// Every session, for a drain.
    pub fn snapshot(&self) -> Vec<SessionHandle> {
        let mut all = Vec::with_capacity(self.len());
        for shard in &self.shards {
            all.extend(shard.lock().iter().cloned());
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
    use pushgate_protocol::UserId;

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
    fn many_users_with_many_devices_are_found_and_removed() {
        let r = Registry::new();
        // 600 users with 1, 2 or 3 devices each: 1,200 sessions over the shards.
        let sessions: Vec<_> =
            (0..600).flat_map(|u| (0..=u % 3).map(move |_| u)).map(|u| session(&r, &format!("u{u}"))).collect();
        sessions.iter().for_each(|s| r.insert(s));
        assert_eq!(r.len(), 1200);
        let mut seen = 0;
        r.for_each(|_| seen += 1);
        assert_eq!(seen, 1200);
        for u in 0..600 {
            let found = r.user_sessions(&format!("u{u}"));
            assert_eq!(found.len(), u % 3 + 1, "user u{u}");
            assert!(found.iter().all(|s| s.user() == format!("u{u}")));
        }
        // Remove every user's first device: the others stay findable.
        for u in 0..600 {
            let first = r.user_sessions(&format!("u{u}"))[0].clone();
            r.remove(&first, &[]);
            assert_eq!(r.user_sessions(&format!("u{u}")).len(), u % 3);
        }
        assert_eq!(r.len(), 600);
        assert_eq!(r.snapshot().len(), 600);
        assert!(r.user_sessions("nobody").is_empty());
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
