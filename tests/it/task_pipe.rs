//! The HTTP/1.x proxy's task pipes (`vendor/pingora-proxy/src/task_pipe.rs`, pingora-proxy
//! patch 4): the semantics of tokio's bounded channel that the proxy relies on. Every proxied
//! HTTP/1.x request in the other modules goes through them too. A pipe is owned by the
//! function that joins the two halves and lent to them (patch 11), as here.
use futures::FutureExt;
use pingora_proxy::task_pipe::{Pipe, SendError, TrySendError};

#[test]
fn tasks_arrive_in_order_and_the_pipe_holds_n() {
    let mut pipe = Pipe::<u32, 2>::new();
    let (tx, mut rx) = pipe.split();
    tx.try_reserve().unwrap().send(1);
    tx.try_reserve().unwrap().send(2);
    assert!(matches!(tx.try_reserve(), Err(TrySendError::Full(()))));
    assert!(tx.send(3).now_or_never().is_none(), "a full pipe waits");
    assert_eq!(rx.recv().now_or_never(), Some(Some(1)));
    tx.send(3).now_or_never().unwrap().unwrap();
    assert_eq!(rx.recv().now_or_never(), Some(Some(2)));
    assert_eq!(rx.recv().now_or_never(), Some(Some(3)));
    assert!(rx.recv().now_or_never().is_none(), "an empty pipe waits");
    drop(tx);
    assert_eq!(rx.recv().now_or_never(), Some(None));
}

#[test]
fn an_unused_permit_gives_its_slot_back() {
    let mut pipe = Pipe::<u32, 1>::new();
    let (tx, _rx) = pipe.split();
    let permit = tx.try_reserve().unwrap();
    assert!(matches!(tx.try_reserve(), Err(TrySendError::Full(()))));
    drop(permit);
    assert!(tx.try_reserve().is_ok());
}

#[test]
fn the_receiver_gone_closes_the_pipe() {
    let mut pipe = Pipe::<u32, 2>::new();
    let (tx, rx) = pipe.split();
    tx.try_reserve().unwrap().send(1);
    assert!(!tx.is_closed());
    drop(rx);
    assert!(tx.is_closed());
    assert!(matches!(tx.try_reserve(), Err(TrySendError::Closed(()))));
    assert_eq!(tx.send(7).now_or_never(), Some(Err(SendError(7))));
}

/// Across tasks, so that only the pipe's own wake-ups can resume a waiting half (in one task,
/// any wake-up re-polls both). A slow receiver keeps the sender waiting on a full pipe; a slow
/// sender keeps the receiver waiting on an empty one. A pipe lent for `'static` is leaked: a
/// few bytes, once.
#[tokio::test]
async fn a_waiting_receiver_and_sender_are_woken() {
    for slow_receiver in [true, false] {
        let pipe: &'static mut Pipe<u32, 1> = Box::leak(Box::new(Pipe::new()));
        let (tx, mut rx) = pipe.split();
        let consumer = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(v) = rx.recv().await {
                got.push(v);
                if slow_receiver {
                    tokio::task::yield_now().await;
                }
            }
            got
        });
        let producer = async move {
            for v in 0..50 {
                if !slow_receiver {
                    tokio::task::yield_now().await;
                }
                tx.send(v).await.unwrap();
            }
        };
        let waits = if slow_receiver { "sender" } else { "receiver" };
        let limit = std::time::Duration::from_secs(5);
        tokio::time::timeout(limit, producer)
            .await
            .unwrap_or_else(|_| panic!("a waiting {waits} was not woken"));
        let got = tokio::time::timeout(limit, consumer)
            .await
            .unwrap_or_else(|_| panic!("a waiting {waits} was not woken"));
        assert_eq!(got.unwrap(), (0..50).collect::<Vec<_>>(), "{waits}");
    }
}
