use super::*;
use crate::scoring::NEUTRAL_TERM;
use crate::{DeploymentId, ModelIdx};

const S: Duration = Duration::from_secs(1);

fn breaker_config() -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: 3,
        error_ratio: 0.5,
        min_volume: 100,
        window: Duration::from_secs(30),
        base_cooldown: Duration::from_secs(5),
        max_cooldown: Duration::from_secs(60),
    }
}

/// Deployments `(id, models)`.
fn infos(list: &[(&str, &[u32])]) -> Vec<DeploymentInfo> {
    list.iter()
        .map(|(id, models)| DeploymentInfo {
            id: DeploymentId((*id).into()),
            io_price_pico_usd: None,
            quality: None,
            models: models.iter().map(|&m| ModelIdx(m)).collect(),
        })
        .collect()
}

fn outcome(d: u32, ms: u64, ok: bool, at: Instant) -> Outcome {
    Outcome {
        cost: None,
        deployment: DeploymentIdx(d),
        ok,
        status: if ok { 200 } else { 500 },
        latency: Duration::from_millis(ms),
        ttfb: Duration::from_millis(ms / 2),
        usage: None,
        at,
    }
}

fn state_of(b: &mut Board, d: u32, now: Instant) -> (BreakerState, u32) {
    let t = b.table(1, Weights::default(), 2, now);
    let s = t.get(DeploymentIdx(d)).unwrap();
    (s.breaker, s.ejections)
}

#[test]
fn consecutive_failures_eject_but_never_the_last_healthy() {
    let t0 = Instant::now();
    // Model 0 has a and b.
    let mut b = Board::new(infos(&[("a", &[0]), ("b", &[0])]), breaker_config());
    assert_eq!(b.observe(&outcome(0, 1, false, t0)), None);
    assert_eq!(b.observe(&outcome(0, 1, false, t0)), None);
    assert_eq!(
        b.observe(&outcome(0, 1, false, t0)),
        Some(BreakerState::Open)
    );
    assert_eq!(state_of(&mut b, 0, t0 + S), (BreakerState::Open, 1));
    // b is now the last healthy deployment of model 0: it fails on and on, and stays in.
    for _ in 0..50 {
        assert_eq!(b.observe(&outcome(1, 1, false, t0 + S)), None);
    }
    assert_eq!(state_of(&mut b, 1, t0 + S), (BreakerState::Closed, 0));
    // Unknown deployments (a config the scorer does not know) are ignored.
    assert_eq!(b.observe(&outcome(9, 1, false, t0)), None);
}

#[test]
fn a_deployment_is_kept_for_the_model_it_alone_serves() {
    let t0 = Instant::now();
    // `shared` serves models 0 and 1; model 1 has nothing else.
    let mut b = Board::new(
        infos(&[("shared", &[0, 1]), ("other", &[0])]),
        breaker_config(),
    );
    for _ in 0..10 {
        assert_eq!(b.observe(&outcome(0, 1, false, t0)), None);
    }
    assert_eq!(state_of(&mut b, 0, t0).0, BreakerState::Closed);
    // `other` has a sibling (`shared`, closed) in model 0: it may go.
    for _ in 0..2 {
        b.observe(&outcome(1, 1, false, t0));
    }
    assert_eq!(
        b.observe(&outcome(1, 1, false, t0)),
        Some(BreakerState::Open)
    );
}

#[test]
fn cooldown_end_reads_half_open_and_the_next_outcome_is_the_probe() {
    let t0 = Instant::now();
    let mut b = Board::new(infos(&[("a", &[0]), ("b", &[0])]), breaker_config());
    for _ in 0..3 {
        b.observe(&outcome(0, 1, false, t0));
    }
    let until = b.open_until(DeploymentIdx(0)).unwrap();
    assert_eq!(until, t0 + 5 * S);
    // Opened and not yet published: a change.
    assert!(b.breakers_changed(t0));
    let t = b.table(1, Weights::default(), 2, t0 + S);
    assert_eq!(t.get(DeploymentIdx(0)).unwrap().open_until_ms, Some(4000));
    assert!(!b.breakers_changed(until - S));
    // Late results from shards that had not heard yet change nothing.
    assert_eq!(b.observe(&outcome(0, 1, true, t0 + 2 * S)), None);
    // Cooldown over: half-open, which the next table must show.
    assert!(b.breakers_changed(until));
    let t = b.table(2, Weights::default(), 2, until);
    let a = t.get(DeploymentIdx(0)).unwrap();
    assert_eq!((a.breaker, a.open_until_ms), (BreakerState::HalfOpen, None));
    assert!(!b.breakers_changed(until));
    // A failed probe opens it again, for twice as long.
    assert_eq!(
        b.observe(&outcome(0, 1, false, until)),
        Some(BreakerState::Open)
    );
    assert_eq!(b.open_until(DeploymentIdx(0)), Some(until + 10 * S));
    assert_eq!(state_of(&mut b, 0, until).1, 2);
    // A successful probe closes it.
    let later = until + 10 * S;
    assert_eq!(
        b.observe(&outcome(0, 1, true, later)),
        Some(BreakerState::Closed)
    );
    assert_eq!(state_of(&mut b, 0, later), (BreakerState::Closed, 2));
}

#[test]
fn a_failed_probe_of_the_last_healthy_leaves_it_half_open() {
    let t0 = Instant::now();
    let mut b = Board::new(infos(&[("a", &[0]), ("b", &[0])]), breaker_config());
    for _ in 0..3 {
        b.observe(&outcome(0, 1, false, t0));
    }
    // a is half-open at 5 s, so b may be ejected at 5 s...
    let t5 = t0 + 5 * S;
    for _ in 0..3 {
        b.observe(&outcome(1, 1, false, t5));
    }
    assert_eq!(state_of(&mut b, 1, t5).0, BreakerState::Open);
    // ...and a, now the last one not open, stays half-open through a failed probe.
    assert_eq!(b.observe(&outcome(0, 1, false, t5)), None);
    assert_eq!(state_of(&mut b, 0, t5).0, BreakerState::HalfOpen);
    assert_eq!(
        b.observe(&outcome(0, 1, true, t5)),
        Some(BreakerState::Closed)
    );
}

#[test]
fn an_all_failing_deployment_scores_nothing_on_the_board() {
    let t0 = Instant::now();
    let mut b = Board::new(infos(&[("good", &[0]), ("bad", &[0])]), breaker_config());
    for i in 0..4 {
        b.observe(&outcome(0, 20, true, t0 + i * S / 10));
        b.observe(&outcome(1, 1, false, t0 + i * S / 10));
    }
    let t = b.table(1, Weights::default(), 2, t0 + S);
    let (good, bad) = (
        t.get(DeploymentIdx(0)).unwrap(),
        t.get(DeploymentIdx(1)).unwrap(),
    );
    assert_eq!(bad.score, 0.0);
    assert_eq!(good.terms.quality, NEUTRAL_TERM);
    assert!(good.score > 0.5, "{good:?}");
}

#[test]
fn each_shard_sees_the_load_of_the_others_only() {
    let t0 = Instant::now();
    let mut b = Board::new(infos(&[("a", &[0]), ("b", &[0])]), breaker_config());
    b.set_load(0, vec![3, 0]);
    b.set_load(2, vec![1, 4]);
    b.set_load(0, vec![2, 0]);
    let t = b.table(1, Weights::default(), 2, t0);
    let (a, bd) = (DeploymentIdx(0), DeploymentIdx(1));
    assert_eq!(
        (t.in_flight_elsewhere(0, a), t.in_flight_elsewhere(0, bd)),
        (1, 4)
    );
    assert_eq!(
        (t.in_flight_elsewhere(1, a), t.in_flight_elsewhere(1, bd)),
        (3, 4)
    );
    assert_eq!(
        (t.in_flight_elsewhere(2, a), t.in_flight_elsewhere(2, bd)),
        (2, 0)
    );
    assert_eq!(
        t.in_flight_elsewhere(0, DeploymentIdx(9)),
        0,
        "unknown deployment"
    );
}

// Actor tests run on paused time: every wait is bounded by a (virtual) timeout, and time
// moves only when the test advances it or the runtime has nothing else to do.

fn args(shards: Vec<InboxSender<ShardCmd>>, publish_every: Duration) -> ScorerArgs {
    ScorerArgs {
        shards,
        publish_every,
        weights: Weights::default(),
        min_samples: 2,
        deployments: infos(&[("p/fast", &[0]), ("p/slow", &[0])]),
        breaker: breaker_config(),
    }
}

/// The next table a shard receives, within `within` of virtual time.
async fn next_table(rx: &flume::Receiver<ShardCmd>, within: Duration) -> Arc<ScoreTable> {
    loop {
        match tokio::time::timeout(within, rx.recv_async()).await {
            Ok(Ok(ShardCmd::Scores(t))) => return t,
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => panic!("inbox closed: {e}"),
            Err(_) => panic!("no table within {within:?}"),
        }
    }
}

fn clock() -> Instant {
    tokio::time::Instant::now().into_std()
}

#[tokio::test(start_paused = true)]
async fn batches_in_snapshots_out_to_every_shard() {
    let (tx0, rx0) = flume::unbounded();
    let (tx1, rx1) = flume::unbounded();
    let every = Duration::from_millis(100);
    let (actor, join) = Actor::spawn(None, ScorerActor, args(vec![tx0, tx1], every))
        .await
        .unwrap();
    let now = clock();
    actor
        .cast(ScorerMsg::Outcomes(vec![
            outcome(0, 10, true, now),
            outcome(1, 300, true, now),
        ]))
        .unwrap();
    actor
        .cast(ScorerMsg::Outcomes(vec![
            outcome(0, 10, true, now),
            outcome(1, 300, false, now),
        ]))
        .unwrap();
    tokio::time::advance(every).await;
    let table = next_table(&rx0, every * 2).await;
    let (fast, slow) = (
        table.get(DeploymentIdx(0)).unwrap(),
        table.get(DeploymentIdx(1)).unwrap(),
    );
    assert_eq!((fast.window_samples, slow.window_samples), (2, 2));
    assert!(fast.score > slow.score, "{fast:?} vs {slow:?}");
    assert_eq!(slow.success_ratio, 0.5);
    // The other shard got the same snapshot.
    assert!(Arc::ptr_eq(&next_table(&rx1, every).await, &table));
    let snap = ractor::call!(actor, ScorerMsg::Snapshot).unwrap();
    assert!(Arc::ptr_eq(&snap, &table));
    // Nothing new: nothing published until the republish period.
    tokio::time::advance(every * 3).await;
    assert!(rx0.try_recv().is_err());
    actor.stop(None);
    join.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_breaker_opening_is_published_at_once_and_half_open_at_cooldown_end() {
    let (tx, rx) = flume::unbounded();
    // An interval far longer than the test: every table seen comes from a breaker change.
    let every = Duration::from_secs(3600);
    let (actor, join) = Actor::spawn(None, ScorerActor, args(vec![tx], every))
        .await
        .unwrap();
    let t0 = clock();
    actor
        .cast(ScorerMsg::Outcomes(
            (0..3).map(|_| outcome(1, 1, false, t0)).collect(),
        ))
        .unwrap();
    let table = next_table(&rx, S).await;
    let slow = table.get(DeploymentIdx(1)).unwrap();
    assert_eq!(
        (slow.breaker, slow.open_until_ms, slow.ejections),
        (BreakerState::Open, Some(5000), 1)
    );
    assert_eq!(table.open_until(DeploymentIdx(1)), Some(t0 + 5 * S));
    assert_eq!(
        table.get(DeploymentIdx(0)).unwrap().breaker,
        BreakerState::Closed
    );
    // The cooldown ends: half-open is published then.
    tokio::time::advance(5 * S).await;
    let table = next_table(&rx, S).await;
    assert_eq!(
        table.get(DeploymentIdx(1)).unwrap().breaker,
        BreakerState::HalfOpen
    );
    // A success (a shard's probe) closes it at once.
    actor
        .cast(ScorerMsg::Outcomes(vec![outcome(1, 1, true, clock())]))
        .unwrap();
    let table = next_table(&rx, S).await;
    let slow = table.get(DeploymentIdx(1)).unwrap();
    assert_eq!((slow.breaker, slow.ejections), (BreakerState::Closed, 1));
    actor.stop(None);
    join.await.unwrap();
}
