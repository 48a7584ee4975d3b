//! The HTTP side of the exporter: hyper on a thread of its own, serving `/metrics` from the
//! last published snapshot, so that a slow or hostile scraper costs the event loop nothing.

use std::convert::Infallible;
use std::io;
use std::net::TcpListener as StdListener;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{ACCEPT, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::snapshot::{Format, Snapshot};

/// A scraper that has not sent its request's headers by then is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `listener` on a new thread until the sender of `snapshots` is dropped.
pub fn spawn(listener: StdListener, snapshots: watch::Receiver<Arc<Snapshot>>) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    thread::Builder::new().name("tcptop-exporter".into()).spawn(move || {
        // Dropping the runtime then ends every connection still open.
        runtime.block_on(serve(listener, snapshots))
    })?;
    Ok(())
}

async fn serve(listener: StdListener, snapshots: watch::Receiver<Arc<Snapshot>>) {
    let Ok(listener) = TcpListener::from_std(listener) else { return };
    let mut publisher = snapshots.clone();
    let mut publisher_gone = std::pin::pin!(async move { while publisher.changed().await.is_ok() {} });
    loop {
        let stream = tokio::select! {
            () = &mut publisher_gone => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors, most likely: let some close.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let snapshots = snapshots.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                // A clone of the Arc: no lock is held while the response is written.
                let snapshot = Arc::clone(&snapshots.borrow());
                async move { Ok::<_, Infallible>(respond(&request, &snapshot)) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond<B>(request: &Request<B>, snapshot: &Snapshot) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return plain(StatusCode::NOT_FOUND, "tcptop serves its metrics at /metrics\n");
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n");
    }
    let accept = request.headers().get(ACCEPT).and_then(|accept| accept.to_str().ok());
    let format = Format::negotiate(accept);
    let mut response = Response::new(Full::new(snapshot.encoded(format)));
    response.headers_mut().insert(CONTENT_TYPE, format.content_type().parse().expect("a valid header"));
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}
