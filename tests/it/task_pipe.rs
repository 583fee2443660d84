//! The HTTP/1.x proxy's task pipes (`vendor/pingora-proxy/src/task_pipe.rs`, pingora-proxy
//! patch 4): the semantics of tokio's bounded channel that the proxy relies on. Every proxied
//! HTTP/1.x request in the other modules goes through them too.
use futures::FutureExt;
use pingora_proxy::task_pipe::{channel, SendError, TrySendError};

#[test]
fn tasks_arrive_in_order_and_the_pipe_holds_n() {
    let (tx, mut rx) = channel::<u32, 2>();
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
    let (tx, _rx) = channel::<u32, 1>();
    let permit = tx.try_reserve().unwrap();
    assert!(matches!(tx.try_reserve(), Err(TrySendError::Full(()))));
    drop(permit);
    assert!(tx.try_reserve().is_ok());
}

#[test]
fn the_receiver_gone_closes_the_pipe() {
    let (tx, rx) = channel::<u32, 2>();
    tx.try_reserve().unwrap().send(1);
    assert!(!tx.is_closed());
    drop(rx);
    assert!(tx.is_closed());
    assert!(matches!(tx.try_reserve(), Err(TrySendError::Closed(()))));
    assert_eq!(tx.send(7).now_or_never(), Some(Err(SendError(7))));
}

#[tokio::test]
async fn a_waiting_receiver_and_sender_are_woken() {
    let (tx, mut rx) = channel::<u32, 1>();
    let consumer = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(v) = rx.recv().await {
            got.push(v);
            tokio::task::yield_now().await;
        }
        got
    });
    for v in 0..50 {
        tx.send(v).await.unwrap();
    }
    drop(tx);
    assert_eq!(consumer.await.unwrap(), (0..50).collect::<Vec<_>>());
}
