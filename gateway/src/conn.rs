//! A client connection's socket from its accept until its session first waits on it: bare —
//! accepted non-blocking but unknown to the runtime — until something must wait for it, then
//! registered. Most connects never wait: the request is there at the accept, the `101` and the
//! welcome go out in one write, and the idle session parks in the parking lot's epoll set; the
//! runtime then never registers the socket (no `epoll_ctl` add at the accept, none to delete at
//! the park, no registration allocated and freed — measured: `BENCHMARKS.md`, "Connects:
//! sockets the runtime never sees").

use std::{io, net::SocketAddr};

use rustix::net::SocketFlags;
use tokio::{io::unix::AsyncFd, net::TcpStream};

/// A connection's socket.
#[derive(Debug)]
pub enum Conn {
    /// Non-blocking, not registered with the runtime: read and written only by system calls
    /// that do not wait.
    Bare(std::net::TcpStream),
    /// Registered with the runtime, to wait on.
    Registered(TcpStream),
}

impl Conn {
    /// The socket registered with the runtime (registering it now if it is bare). Inside the
    /// runtime.
    pub fn into_registered(self) -> io::Result<TcpStream> {
        match self {
            Self::Bare(socket) => TcpStream::from_std(socket),
            Self::Registered(stream) => Ok(stream),
        }
    }
}

/// A listening socket that accepts bare connections (see [`Conn`]).
pub struct Acceptor {
    listener: AsyncFd<std::net::TcpListener>,
}

impl Acceptor {
    /// Takes over a listener (its socket stays the same: backlog, options). Inside the runtime.
    // `AsyncFd::new` is deprecated because a type's `as_raw_fd` might not keep naming the same
    // open file; a `std::net::TcpListener` owns its descriptor, so it does (and the sound
    // replacement, `AsyncFd::register`, is `unsafe`, which this workspace forbids).
    #[allow(deprecated)]
    pub fn new(listener: tokio::net::TcpListener) -> io::Result<Self> {
        Ok(Self { listener: AsyncFd::new(listener.into_std()?)? })
    }

    /// Waits for the next connection and accepts it non-blocking and close-on-exec, in one
    /// system call, as the runtime's own accept does — but leaves it unregistered.
    pub async fn accept(&self) -> io::Result<(std::net::TcpStream, SocketAddr)> {
        loop {
            let mut ready = self.listener.readable().await?;
            let accepted = ready.try_io(|listener| {
                Ok(rustix::net::acceptfrom_with(listener, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC)?)
            });
            let Ok(accepted) = accepted else { continue };
            let (fd, peer) = accepted?;
            let peer = peer
                .and_then(|peer| SocketAddr::try_from(peer).ok())
                .ok_or_else(|| io::Error::other("accepted a connection without an IP peer address"))?;
            return Ok((std::net::TcpStream::from(fd), peer));
        }
    }
}
