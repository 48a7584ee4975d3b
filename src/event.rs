//! What the one event loop waits on, as one stream of `Event`s: the collection thread's
//! output, terminal input, stop signals and the resolver's answers. A new source (an
//! exporter's requests) is one more field, one more variant and one more arm.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::pin;
use std::task::Poll;

use futures_util::stream::LocalBoxStream;
use futures_util::StreamExt;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::collection::{Collected, Reports};
use crate::resolve::Resolved;

#[derive(Debug)]
pub enum Event {
    Collected(Collected),
    /// The collection thread is gone (it ended after its last interval, or it panicked).
    CollectionEnded,
    /// A key, mouse or resize event from the terminal (live screen only).
    Input(crossterm::event::Event),
    /// Ctrl-C, SIGTERM or SIGHUP: finish the interval and leave.
    Stop,
    /// The resolver thread's answer about an address (live screen only).
    Resolved(Resolved),
}

pub struct Sources {
    pub collected: Reports,
    /// `None` without a live screen, and once the terminal is gone.
    pub input: Option<LocalBoxStream<'static, io::Result<crossterm::event::Event>>>,
    /// `None` once the stream ends.
    pub stop_signals: Option<LocalBoxStream<'static, ()>>,
    /// `None` without a live screen, and once the resolver thread is gone.
    pub resolved: Option<UnboundedReceiver<Resolved>>,
}

impl Sources {
    /// The next event, waiting for it.
    pub async fn next(&mut self) -> Event {
        loop {
            tokio::select! {
                collected = self.collected.recv() => {
                    return collected.map_or(Event::CollectionEnded, Event::Collected);
                }
                input = next_of(&mut self.input), if self.input.is_some() => match input {
                    Some(Ok(input)) => return Event::Input(input),
                    // Nothing more can be read from the terminal.
                    Some(Err(_)) | None => self.input = None,
                },
                signal = next_of(&mut self.stop_signals), if self.stop_signals.is_some() => match signal {
                    Some(()) => return Event::Stop,
                    None => self.stop_signals = None,
                },
                answer = recv_of(&mut self.resolved), if self.resolved.is_some() => match answer {
                    Some(answer) => return Event::Resolved(answer),
                    None => self.resolved = None,
                },
            }
        }
    }

    /// An event that is already waiting, if any. Polled with the loop's own waker: a source
    /// may remember only the first waker it is given (crossterm's `EventStream` does). The
    /// runtime looks for signals and I/O first: it does so only when its task yields, and a
    /// loop that always finds an interval ready (a table slower than its interval) would
    /// never see a stop.
    pub async fn ready(&mut self) -> Option<Event> {
        tokio::task::yield_now().await;
        let mut next = pin!(self.next());
        poll_fn(|cx| match next.as_mut().poll(cx) {
            Poll::Ready(event) => Poll::Ready(Some(event)),
            Poll::Pending => Poll::Ready(None),
        })
        .await
    }
}

async fn recv_of<T>(receiver: &mut Option<UnboundedReceiver<T>>) -> Option<T> {
    receiver.as_mut()?.recv().await
}

async fn next_of<T>(stream: &mut Option<LocalBoxStream<'static, T>>) -> Option<T> {
    stream.as_mut()?.next().await
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::task::Waker;

    use futures_util::stream;

    use super::*;

    /// Wakes only the first waker it was given, as crossterm's `EventStream` does.
    #[derive(Default)]
    struct FirstWaker {
        waker: Option<Waker>,
        input: Option<crossterm::event::Event>,
    }

    /// A regression here hangs: nothing would wake the loop again.
    #[test]
    fn input_that_arrives_after_a_look_at_what_is_ready_still_wakes_the_loop() {
        let shared = Arc::new(Mutex::new(FirstWaker::default()));
        let polled = Arc::clone(&shared);
        let input = stream::poll_fn(move |cx| {
            let mut state = polled.lock().unwrap();
            match state.input.take() {
                Some(input) => Poll::Ready(Some(Ok(input))),
                None => {
                    state.waker.get_or_insert_with(|| cx.waker().clone());
                    Poll::Pending
                }
            }
        });
        let (_sender, collected) = crate::collection::reports();
        let mut sources =
            Sources { collected, input: Some(input.boxed_local()), stop_signals: None, resolved: None };
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let event = runtime.block_on(async {
            assert!(sources.ready().await.is_none());
            // Runs once the loop waits.
            tokio::spawn(async move {
                let mut state = shared.lock().unwrap();
                state.input = Some(crossterm::event::Event::FocusGained);
                state.waker.take().expect("a waker").wake();
            });
            sources.next().await
        });
        assert!(matches!(event, Event::Input(crossterm::event::Event::FocusGained)), "{event:?}");
    }

    /// A regression here fails: the signal would never be seen while a report is ready.
    #[test]
    fn a_signal_is_seen_while_reports_are_always_ready() {
        use tokio::signal::unix::{signal, SignalKind};

        const READY: usize = 200;
        let (mut reporter, collected) = crate::collection::reports();
        for _ in 0..READY {
            let events = Collected::Events { events: Vec::new(), wall: std::time::SystemTime::UNIX_EPOCH };
            assert!(reporter.send(events));
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let stopped = runtime.block_on(async {
            let mut usr1 = signal(SignalKind::user_defined1()).unwrap();
            let stop = stream::poll_fn(move |cx| usr1.poll_recv(cx));
            let mut sources =
                Sources { collected, input: None, stop_signals: Some(stop.boxed_local()), resolved: None };
            // SAFETY: raise only sends this process a signal, which `usr1` handles.
            assert_eq!(unsafe { libc::raise(libc::SIGUSR1) }, 0);
            // Each look picks one of the ready sources at random: a stop seen is soon taken.
            for _ in 0..READY {
                if let Some(Event::Stop) = sources.ready().await {
                    return true;
                }
            }
            false
        });
        assert!(stopped, "no stop among {READY} looks at the ready events");
    }
}
