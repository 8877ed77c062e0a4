//! Hostile bytes on the native socket: every case gets a clear error (or the connection is
//! closed when framing is lost) and the daemon keeps serving everyone else.

mod common;

use cidcache::proto::{self, Header, Request, Response, HEADER_LEN};
use cidcache::{Code, Key};
use common::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn raw(d: &Daemon) -> UnixStream {
    let s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

fn read_reply(s: &mut UnixStream) -> Option<(Header, Response)> {
    let mut h = [0u8; HEADER_LEN];
    s.read_exact(&mut h).ok()?;
    let h = Header::parse(&h).unwrap();
    let mut body = vec![0u8; h.body_len as usize];
    s.read_exact(&mut body).ok()?;
    Some((h, Response::decode(h.msg_type, &body).unwrap()))
}

fn hello(s: &mut UnixStream) {
    s.write_all(
        &Request::Hello {
            version: proto::VERSION,
            pid: 1,
            writer: true,
        }
        .encode(1),
    )
    .unwrap();
    assert!(matches!(read_reply(s), Some((_, Response::Hello(_)))));
}

fn expect_error(s: &mut UnixStream, code: Code) -> String {
    match read_reply(s) {
        Some((_, Response::Error { code: c, message })) => {
            assert_eq!(c, code, "{message}");
            assert!(!message.is_empty());
            message
        }
        other => panic!("expected an error reply, got {other:?}"),
    }
}

fn connection_closed(s: &mut UnixStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

#[test]
fn hostile_frames_get_errors_and_the_daemon_keeps_serving() {
    let d = Daemon::start(&[]);
    let good = d.client();
    good.put(b"precious", b"data").unwrap();

    // Garbage instead of a header: wrong version -> error, then closed.
    let mut s = raw(&d);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    expect_error(&mut s, Code::Protocol);
    assert!(connection_closed(&mut s));

    // Oversized frame.
    let mut s = raw(&d);
    let mut f = Request::Stats.encode(5);
    f[0..4].copy_from_slice(&(proto::MAX_BODY + 1).to_le_bytes());
    s.write_all(&f).unwrap();
    let m = expect_error(&mut s, Code::Protocol);
    assert!(m.contains("exceeds"), "{m}");
    assert!(connection_closed(&mut s));

    // Requests before Hello.
    let mut s = raw(&d);
    s.write_all(&Request::Stats.encode(1)).unwrap();
    expect_error(&mut s, Code::Protocol);

    // After Hello: unknown type, truncated body, long key, lying counts -> errors, same
    // connection keeps working.
    let mut s = raw(&d);
    hello(&mut s);
    let mut f = Request::Stats.encode(2);
    f[6..8].copy_from_slice(&0x7777u16.to_le_bytes());
    s.write_all(&f).unwrap();
    let m = expect_error(&mut s, Code::Protocol);
    assert!(m.contains("unknown request type"), "{m}");

    let f = Request::Seal {
        key: Key::new(b"abc").unwrap(),
    }
    .encode(3);
    let mut t = f[..f.len() - 1].to_vec();
    t[0..4].copy_from_slice(&((f.len() - 1 - HEADER_LEN) as u32).to_le_bytes());
    s.write_all(&t).unwrap();
    let m = expect_error(&mut s, Code::Protocol);
    assert!(m.contains("truncated"), "{m}");

    let mut body = vec![64u8];
    body.extend_from_slice(&[7u8; 64]);
    let mut f = Vec::new();
    f.extend_from_slice(&(body.len() as u32).to_le_bytes());
    f.extend_from_slice(&proto::VERSION.to_le_bytes());
    f.extend_from_slice(&proto::msg::GET.to_le_bytes());
    f.extend_from_slice(&4u64.to_le_bytes());
    f.extend_from_slice(&body);
    s.write_all(&f).unwrap();
    let m = expect_error(&mut s, Code::InvalidKey);
    assert!(m.contains("63"), "{m}");

    let mut f = Vec::new();
    f.extend_from_slice(&4u32.to_le_bytes());
    f.extend_from_slice(&proto::VERSION.to_le_bytes());
    f.extend_from_slice(&proto::msg::PUT_MANY.to_le_bytes());
    f.extend_from_slice(&6u64.to_le_bytes());
    f.extend_from_slice(&u32::MAX.to_le_bytes());
    s.write_all(&f).unwrap();
    expect_error(&mut s, Code::Protocol);

    // Seal / abort of what this connection never created.
    s.write_all(
        &Request::Seal {
            key: Key::new(b"precious").unwrap(),
        }
        .encode(7),
    )
    .unwrap();
    assert!(matches!(
        read_reply(&mut s),
        Some((_, Response::Error { .. }))
    ));
    s.write_all(
        &Request::Abort {
            key: Key::new(b"precious").unwrap(),
        }
        .encode(8),
    )
    .unwrap();
    assert!(matches!(
        read_reply(&mut s),
        Some((_, Response::Error { .. }))
    ));

    // Still a working connection.
    s.write_all(
        &Request::Contains {
            key: Key::new(b"precious").unwrap(),
        }
        .encode(9),
    )
    .unwrap();
    assert!(matches!(read_reply(&mut s), Some((h, Response::Bool(true))) if h.request_id == 9));

    // A client that disappears mid-frame.
    let mut s2 = raw(&d);
    hello(&mut s2);
    let f = Request::Put(proto::PutItem {
        key: Key::new(b"half").unwrap(),
        flags: 0,
        meta: b"",
        data: &[1; 1000],
    })
    .encode(1);
    s2.write_all(&f[..500]).unwrap();
    drop(s2);

    // The daemon and its data are intact for everyone else.
    assert_eq!(good.get(b"precious").unwrap().unwrap().data(), b"data");
    assert!(good.get(b"half").unwrap().is_none());
    good.put(b"after", b"ok").unwrap();
    assert!(eventually(Duration::from_secs(2), || stat(
        &good, "clients"
    ) == 2));
}
