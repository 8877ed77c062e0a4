//! The Arrow Flight service (`--flight-addr`): a real daemon, arrow-rs's Flight client over a
//! real loopback gRPC connection.

mod common;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightClient, FlightDescriptor, Ticket};
use arrow_schema::{DataType, Field, Schema};
use common::Daemon;
use futures::{StreamExt, TryStreamExt};
use std::sync::Arc;

fn table() -> (Arc<Schema>, Vec<RecordBatch>) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("x", DataType::Float64, true),
    ]));
    let batch = |start: i64, n: i64| {
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(start..start + n)) as ArrayRef,
                Arc::new(StringArray::from_iter_values(
                    (start..start + n).map(|i| format!("row {i}")),
                )),
                Arc::new(Float64Array::from_iter_values(
                    (start..start + n).map(|i| i as f64 * 0.5),
                )),
            ],
        )
        .unwrap()
    };
    (schema.clone(), vec![batch(0, 1000), batch(1000, 500)])
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(extra: &[&str]) -> (Daemon, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut a = vec!["--flight-addr", &addr];
    a.extend_from_slice(extra);
    let d = Daemon::start(&a);
    (d, addr)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn connect(addr: &str) -> FlightClient {
    // The daemon's socket is up before Flight listens: wait for the port.
    let mut last = None;
    for _ in 0..600 {
        match tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
        {
            Ok(ch) => return FlightClient::new(ch),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("Flight never listened: {last:?}");
}

fn code(e: &FlightError) -> tonic::Code {
    match e {
        FlightError::Tonic(s) => s.code(),
        other => panic!("not a gRPC status: {other}"),
    }
}

#[test]
fn get_put_info_and_list_over_flight() {
    let (d, addr) = start(&[]);
    let local = d.client();
    let (schema, batches) = table();
    local.put_arrow(b"flight-table", &schema, &batches).unwrap();
    rt().block_on(async {
        let mut c = connect(&addr).await;
        // DoGet of the whole table.
        let got: Vec<RecordBatch> = c
            .do_get(Ticket::new("flight-table"))
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(got, batches);
        // A projection and filter through the scan path.
        let got: Vec<RecordBatch> = c
            .do_get(Ticket::new(
                r#"{"key":"flight-table","columns":["id"],"filter":"id>=1200"}"#,
            ))
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let ids: Vec<i64> = got
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        assert_eq!(ids, (1200..1500).collect::<Vec<_>>());
        assert_eq!(got[0].num_columns(), 1);
        // Unknown key.
        let e = c
            .do_get(Ticket::new("no-such-key"))
            .await
            .map(|_| ())
            .expect_err("unknown key");
        assert_eq!(code(&e), tonic::Code::NotFound, "{e}");
        // GetFlightInfo and ListFlights.
        let info = c
            .get_flight_info(FlightDescriptor::new_path(vec!["flight-table".into()]))
            .await
            .unwrap();
        assert_eq!(info.total_records, 1500);
        let s: Schema = info.try_decode_schema().unwrap();
        assert_eq!(&s, schema.as_ref());
        let listed: Vec<_> = c
            .list_flights("")
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert!(listed.iter().any(|i| i
            .flight_descriptor
            .as_ref()
            .is_some_and(|d| d.path == vec!["flight-table".to_string()])));
        // DoPut stores a stream as an Arrow object.
        let input = futures::stream::iter(batches.clone().into_iter().map(Ok));
        let data = FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(FlightDescriptor::new_path(vec!["put-table".into()])))
            .build(input);
        let acks: Vec<_> = c.do_put(data).await.unwrap().try_collect().await.unwrap();
        assert_eq!(acks.len(), 1);
    });
    let t = local.get_arrow(b"put-table").unwrap().expect("stored");
    assert_eq!(t.batches, batches);
}

#[test]
fn a_lying_or_malformed_put_stores_nothing() {
    let (d, addr) = start(&[]);
    let local = d.client();
    let (_, batches) = table();
    rt().block_on(async {
        let mut c = connect(&addr).await;
        // The schema message says one thing, the batches are encoded from another: swap the
        // schema message of one stream into another.
        let other = Arc::new(Schema::new(vec![Field::new(
            "only",
            DataType::Int64,
            false,
        )]));
        let lie = RecordBatch::try_new(
            other.clone(),
            vec![Arc::new(Int64Array::from_iter_values(0..10)) as ArrayRef],
        )
        .unwrap();
        let mut honest: Vec<_> = FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(FlightDescriptor::new_path(vec!["lying".into()])))
            .build(futures::stream::iter(batches.clone().into_iter().map(Ok)))
            .try_collect()
            .await
            .unwrap();
        let liar: Vec<_> = FlightDataEncoderBuilder::new()
            .build(futures::stream::iter([Ok(lie)]))
            .try_collect()
            .await
            .unwrap();
        // Keep the honest schema (and descriptor), replace the batches with the lying ones.
        honest.truncate(1);
        honest.extend(liar.into_iter().skip(1));
        let r = match c
            .do_put(futures::stream::iter(honest.into_iter().map(Ok)))
            .await
        {
            Ok(s) => s.try_collect::<Vec<_>>().await.err(),
            Err(e) => Some(e),
        };
        let e = r.expect("a lying stream is refused");
        assert_eq!(code(&e), tonic::Code::InvalidArgument, "{e}");

        // Garbage bytes in place of the IPC header.
        let mut bad: Vec<_> = FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(FlightDescriptor::new_path(vec!["garbage".into()])))
            .build(futures::stream::iter(batches.clone().into_iter().map(Ok)))
            .try_collect()
            .await
            .unwrap();
        bad[1].data_header = vec![0xff; 40].into();
        let r = match c
            .do_put(futures::stream::iter(bad.into_iter().map(Ok)))
            .await
        {
            Ok(s) => s.try_collect::<Vec<_>>().await.err(),
            Err(e) => Some(e),
        };
        let e = r.expect("a malformed stream is refused");
        assert_eq!(code(&e), tonic::Code::InvalidArgument, "{e}");
    });
    assert!(local.get(b"lying").unwrap().is_none(), "nothing stored");
    assert!(local.get(b"garbage").unwrap().is_none(), "nothing stored");
    // The daemon serves on.
    local.put(b"after", b"ok").unwrap();
}

#[test]
fn a_token_is_required_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("token");
    std::fs::write(&tok, "s3cret-token\n").unwrap();
    let (d, addr) = start(&["--flight-token-file", tok.to_str().unwrap()]);
    let (schema, batches) = table();
    d.client().put_arrow(b"guarded", &schema, &batches).unwrap();
    rt().block_on(async {
        let mut c = connect(&addr).await;
        let e = c
            .do_get(Ticket::new("guarded"))
            .await
            .map(|_| ())
            .expect_err("no token");
        assert_eq!(code(&e), tonic::Code::Unauthenticated, "{e}");
        c.add_header("authorization", "Bearer wrong").unwrap();
        let e = c
            .do_get(Ticket::new("guarded"))
            .await
            .map(|_| ())
            .expect_err("bad token");
        assert_eq!(code(&e), tonic::Code::Unauthenticated, "{e}");
        let mut c = connect(&addr).await;
        c.add_header("authorization", "Bearer s3cret-token")
            .unwrap();
        let got: Vec<RecordBatch> = c
            .do_get(Ticket::new("guarded"))
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(got, batches);
        let _ = c.list_flights("").await.unwrap().next().await;
    });
}

#[test]
fn beyond_loopback_needs_tls_and_a_token() {
    let out = std::process::Command::new(common::daemon_bin())
        .args([
            "--store",
            &common::unique_store(),
            "--flight-addr",
            "0.0.0.0:1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TLS") && err.contains("token"), "{err}");
}
