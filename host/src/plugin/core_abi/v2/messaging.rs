//! The messaging imports of core ABI version 2 (`send`, `close`, `connection_info`, `join`,
//! `leave`, `members`, `publish`, `peer_certificate`) on the server's [`Messenger`], with [`super`]'s conventions.

use crate::metrics::Op;
use wasmtime::Linker;

use super::{deliver, found, run, text, Status, C};
use crate::plugin::host_api::HostState;
use crate::server::messaging::{Messenger, SendError};

fn send_status(e: SendError) -> Status {
    match e {
        SendError::UnknownConnection(_) => Status::UnknownConnection,
        SendError::TooManyRooms(_) => Status::TooManyRooms,
        SendError::BadRoomName => Status::BadRoomName,
    }
}

/// The server's connections; none outside a server (the trial instance, `sandport call`).
fn messenger(s: &HostState) -> Result<&Messenger, Status> {
    s.messenger().ok_or(Status::UnknownConnection)
}

/// Registers the messaging imports in `linker`.
pub fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    const M: &str = "sandport";
    linker.func_wrap(M, "send", |mut c: C<'_>, to: i64, mp: i32, ml: i32| {
        run(&mut c, |g, s| {
            s.count(Op::Send);
            let message = g.bytes("message", mp, ml)?;
            Ok(messenger(s).and_then(|m| {
                m.send(to as u64, &message, s.state_deadline())
                    .map_err(send_status)
            }))
        })
    })?;
    linker.func_wrap(M, "close", |mut c: C<'_>, conn: i64| {
        run(&mut c, |_, s| {
            s.count(Op::Close);
            Ok(messenger(s).and_then(|m| {
                m.close(conn as u64, s.state_deadline())
                    .map_err(send_status)
            }))
        })
    })?;
    linker.func_wrap(
        M,
        "connection_info",
        |mut c: C<'_>, conn: i64, out: i32, cap: i32, lens_out: i32| {
            run(&mut c, |g, s| {
                s.count(Op::ConnectionInfo);
                let (out, lens) = (
                    g.out("out", out, cap as u32 as u64)?,
                    g.out("lens", lens_out, 8)?,
                );
                let Some(addresses) = s.messenger().and_then(|m| m.addresses(conn as u64)) else {
                    return Ok(Err(Status::UnknownConnection));
                };
                let (peer, local) = (addresses.0.as_bytes(), addresses.1.as_bytes());
                g.write(&lens, 0, &(peer.len() as u32).to_le_bytes())?;
                g.write(&lens, 4, &(local.len() as u32).to_le_bytes())?;
                if peer.len() + local.len() <= out.cap() {
                    g.write(&out, 0, peer)?;
                    g.write(&out, peer.len(), local)?;
                }
                Ok(Ok(()))
            })
        },
    )?;
    linker.func_wrap(
        M,
        "peer_certificate",
        |mut c: C<'_>, conn: i64, out: i32, cap: i32, len_out: i32| {
            run(&mut c, |g, s| {
                s.count(Op::PeerCertificate);
                let (out, len_out) = (
                    g.out("out", out, cap as u32 as u64)?,
                    g.out("len", len_out, 4)?,
                );
                let certificate =
                    messenger(s).and_then(|m| m.certificate(conn as u64).map_err(send_status));
                match certificate {
                    Ok(Some(subject)) => deliver(g, &out, &len_out, subject.as_bytes()),
                    Ok(None) => Ok(Err(Status::Absent)),
                    Err(status) => Ok(Err(status)),
                }
            })
        },
    )?;
    linker.func_wrap(M, "join", |mut c: C<'_>, conn: i64, rp: i32, rl: i32| {
        run(&mut c, |g, s| {
            s.count(Op::Join);
            let room = g.bytes("room", rp, rl)?;
            Ok(text(room)
                .and_then(|room| messenger(s)?.join(conn as u64, &room).map_err(send_status)))
        })
    })?;
    linker.func_wrap(M, "leave", |mut c: C<'_>, conn: i64, rp: i32, rl: i32| {
        run(&mut c, |g, s| {
            s.count(Op::Leave);
            let room = g.bytes("room", rp, rl)?;
            Ok(text(room)
                .and_then(|room| found(s.messenger().is_some_and(|m| m.leave(conn as u64, &room)))))
        })
    })?;
    linker.func_wrap(
        M,
        "members",
        |mut c: C<'_>, rp: i32, rl: i32, out: i32, cap: i32, count_out: i32| {
            run(&mut c, |g, s| {
                s.count(Op::Members);
                let room = g.bytes("room", rp, rl)?;
                let (out, count_out) = (
                    g.out("out", out, cap as u32 as u64)?,
                    g.out("count", count_out, 4)?,
                );
                let room = match text(room) {
                    Ok(room) => room,
                    Err(status) => return Ok(Err(status)),
                };
                let ids = s
                    .messenger()
                    .map_or_else(Vec::new, |m| m.members(&room, s.state_deadline()));
                let count = u32::try_from(ids.len()).unwrap_or(u32::MAX);
                g.write(&count_out, 0, &count.to_le_bytes())?;
                if ids.len().saturating_mul(8) <= out.cap() {
                    let bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
                    g.write(&out, 0, &bytes)?;
                }
                Ok(Ok(()))
            })
        },
    )?;
    linker.func_wrap(
        M,
        "publish",
        |mut c: C<'_>,
         sender: i64,
         rp: i32,
         rl: i32,
         mp: i32,
         ml: i32,
         include: i32,
         count_out: i32| {
            run(&mut c, |g, s| {
                s.count(Op::Publish);
                let room = g.bytes("room", rp, rl)?;
                let message = g.bytes("message", mp, ml)?;
                let count_out = g.out("count", count_out, 4)?;
                let room = match text(room) {
                    Ok(room) => room,
                    Err(status) => return Ok(Err(status)),
                };
                let sent = s.messenger().map_or(0, |m| {
                    m.publish(
                        sender as u64,
                        &room,
                        &message,
                        include != 0,
                        s.state_deadline(),
                    )
                });
                let sent = u32::try_from(sent).unwrap_or(u32::MAX);
                g.write(&count_out, 0, &sent.to_le_bytes()).map(Ok)
            })
        },
    )?;
    Ok(())
}
