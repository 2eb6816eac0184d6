//! A connection's first and last moments on its worker: taking it from the acceptor, `on-connect`
//! and the `connection opened` line; `on-disconnect`, the `connection closed` line and its slot
//! in every counter.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use mio::{Interest, Token};

use super::super::acceptor::NewConn;
use super::super::connection::Connection;
use super::super::handler::Handler;
use super::super::stats::Close;
use super::super::transport::Transport;
use super::handshake::Established;
use super::{Session, Worker};
use crate::plugin::bindings::Connection as ConnInfo;
use crate::record::Event;

impl<H: Handler> Worker<H> {
    pub(super) fn take_new_connections(&mut self) {
        while let Ok(nc) = self.inbox.try_recv() {
            if self.shared.config.proxy_protocol {
                self.await_header(nc);
            } else {
                self.admit(nc, None);
            }
        }
    }

    /// A connection past its PROXY header (if any): its TLS handshake next, or served at once.
    pub(super) fn admit(&mut self, nc: NewConn, client: Option<SocketAddr>) {
        match &self.shared.tls {
            // Read once per connection: a reload between two handshakes changes the next one.
            Some(tls) => {
                let config = tls.current();
                self.begin_handshake(nc, client, config);
            }
            None => self.open(nc, client, None),
        }
    }

    /// Serves a new connection: `on-connect`, then its messages. `client` is the address a
    /// PROXY header gave, which plugins, logs and limits see instead of the socket's peer;
    /// `tls`, the session its handshake established.
    pub(super) fn open(
        &mut self,
        NewConn { mut stream, id, ip }: NewConn,
        client: Option<SocketAddr>,
        tls: Option<Established>,
    ) {
        let chain = self.chain();
        let entry = self.sessions.vacant_entry();
        let key = entry.key();
        let peer = client
            .or_else(|| stream.peer_addr().ok())
            .map_or_else(|| "unknown".into(), |a| a.to_string());
        let local = stream
            .local_addr()
            .map_or_else(|_| "unknown".into(), |a| a.to_string());
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!(conn = id, %peer, "cannot watch connection: {e}");
            self.shared.per_ip.release(ip);
            self.forget(1, 0, Close::NotServed);
            return;
        }
        let (transport, subject) = match tls {
            Some(Established { tls, subject }) => (Transport::tls(stream, tls), subject),
            None => (Transport::plain(stream), None),
        };
        match &subject {
            Some(subject) => tracing::info!(
                conn = id,
                %peer,
                plugins = %chain,
                worker = self.index,
                client_cert = ?subject,
                "connection opened"
            ),
            None => tracing::info!(
                conn = id,
                %peer,
                plugins = %chain,
                worker = self.index,
                "connection opened"
            ),
        }
        let certificate = subject.as_deref();
        (self.messenger).register_with(id, self.index, &peer, &local, certificate);
        self.by_id.insert(id, key);
        let max_output = self.shared.config.max_output_bytes;
        let s = entry.insert(Session {
            io: Connection::new(transport, self.codec, max_output),
            info: ConnInfo { id, peer, local },
            ip,
            state: H::Session::default(),
            connected: 0,
            opened: Instant::now(),
            messages: 0,
            errors: 0,
            counted: 0,
            paused: false,
            recorded: false,
        });
        let (greetings, connected, res) = self.handler.on_connect(&s.info, &mut s.state);
        s.connected = connected;
        if let Some(r) = &self.shared.recorder {
            let peer = s.info.peer.clone();
            s.recorded = r.record(id, Event::Connect { peer })
                && greetings
                    .iter()
                    .all(|g| r.record(id, Event::Greeting(g.clone())));
        }
        for g in greetings {
            s.io.reply(&g);
        }
        match res {
            Ok(true) => s.io.close_after_flush(Close::PluginClosed),
            Ok(false) => {}
            Err(e) => {
                self.shared.stats.plugin_failed(&e, id);
                s.errors += 1;
                s.io.close_after_flush(Close::ConnectFailed);
            }
        }
        self.drive(key);
    }

    /// Closes a connection: `on-disconnect`, the log line, and its slot in the counters.
    pub(super) fn finish(&mut self, key: usize, reason: Close) {
        let mut s = self.sessions.remove(key);
        self.share.update(s.counted, 0);
        self.by_id.remove(&s.info.id);
        self.messenger.unregister(s.info.id);
        self.shared.per_ip.release(s.ip);
        s.io.end_session();
        let _ = self.poll.registry().deregister(s.io.stream_mut());
        for e in self
            .handler
            .on_disconnect(&s.info, &mut s.state, s.connected)
        {
            self.shared.stats.plugin_failed(&e, s.info.id);
        }
        if let Some(r) = self.shared.recorder.as_ref().filter(|_| s.recorded) {
            let reason = reason.text().to_string();
            r.record(s.info.id, Event::Close { reason });
        }
        let chain = self.chain();
        tracing::info!(
            conn = s.info.id,
            peer = %s.info.peer,
            plugins = %chain,
            messages = s.messages,
            errors = s.errors,
            duration_ms = s.opened.elapsed().as_millis() as u64,
            reason = reason.text(),
            "connection closed"
        );
        self.forget(1, s.messages, reason);
    }

    /// `n` of this worker's connections are gone for `reason`: the counters stop counting them.
    pub(super) fn forget(&self, n: usize, messages: u64, reason: Close) {
        if n > 0 {
            self.shared.per_worker[self.index].fetch_sub(n, Relaxed);
            self.shared.stats.closed(n, messages, reason);
        }
    }
}
