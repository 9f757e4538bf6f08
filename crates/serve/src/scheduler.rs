//! Continuous batching: one thread owns the decoding loop and runs every active request together.
//!
//! Requests wait in a bounded queue ([`Scheduler::submit`] refuses at once when it is full, so a
//! client gets its 429 in microseconds instead of an unbounded wait). Up to `parallel` requests
//! are active at a time, each in a slot with its own KV cache ([`Session`]). Every step evaluates
//! the next token of each decoding slot and a chunk of each prompt still being read, in one
//! [`Engine::forward_batch`] of at most `ubatch` tokens: the weights are read once per step for
//! all slots, so the aggregate rate grows with the number of slots while a memory-bound CPU pays
//! little more per step.
//!
//! Idle slots keep their KV cache; a new request takes the idle cache that shares the longest
//! token prefix with its prompt (a system prompt, the earlier turns of a chat) and evaluates only
//! the rest. Before each step, slots whose client went away (its event receiver dropped) or whose
//! deadline passed are ended, so a disconnected client frees its slot within one decode step.
//! When nothing is active the thread blocks on the queue: no spinning while idle.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shuku_infer::{
    BatchItem, Engine, FinishReason, GeneratedToken, Generation, GenerationParams,
    JsonSchemaConstraint, Sequence, Session,
};
use tokio::sync::mpsc::UnboundedSender;

use crate::error::ApiError;

/// How the scheduler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerOptions {
    /// Requests decoded together at most (slots).
    pub parallel: usize,
    /// Positions each slot's KV cache holds (prompt and completion).
    pub slot_context: usize,
    /// Requests that may wait for a slot; one more is refused with 429.
    pub queue: usize,
    /// Most tokens one step evaluates (the engine's micro-batch or less).
    pub ubatch: usize,
}

/// One request for the scheduler.
#[derive(Debug)]
pub struct Job {
    /// The whole prompt, tokenized.
    pub prompt: Vec<u32>,
    /// Sampling and stopping.
    pub params: GenerationParams,
    /// A JSON-schema constraint, fresh.
    pub constraint: Option<JsonSchemaConstraint>,
    /// When the request must be finished; it ends with [`Finish::Timeout`] then.
    pub deadline: Instant,
    /// Where the tokens go. Dropping the receiver cancels the request.
    pub events: UnboundedSender<Event>,
    /// When the request was submitted.
    pub submitted: Instant,
}

/// What the scheduler tells a request.
#[derive(Debug)]
pub enum Event {
    /// A generated token and the text it releases.
    Token(GeneratedToken),
    /// The request is finished.
    Done(Box<Outcome>),
    /// The request failed.
    Failed(ApiError),
}

/// Why a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The engine ended it (end of generation, stop string, length, full context).
    Engine(FinishReason),
    /// Its deadline passed.
    Timeout,
}

impl Finish {
    /// OpenAI's `finish_reason`: `stop` or `length`.
    pub fn openai(self) -> &'static str {
        match self {
            Finish::Engine(FinishReason::EndOfGeneration | FinishReason::Stop) => "stop",
            Finish::Engine(FinishReason::Length | FinishReason::ContextFull) | Finish::Timeout => {
                "length"
            }
        }
    }

    /// The name in the request log.
    pub fn log_name(self) -> String {
        match self {
            Finish::Engine(r) => r.to_string(),
            Finish::Timeout => "timeout".into(),
        }
    }
}

/// A finished request.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Why it ended.
    pub finish: Finish,
    /// Tokens, text and metrics.
    pub generation: Generation,
    /// Prompt tokens taken from a slot's cache instead of evaluated.
    pub reused_tokens: usize,
    /// Time spent in the queue before a slot took it.
    pub queued: Duration,
}

/// Counters the scheduler keeps for `/health` and `/metrics`.
#[derive(Debug, Default)]
pub struct SchedulerStats {
    /// Requests waiting in the queue.
    pub queued: AtomicUsize,
    /// Slots decoding a request.
    pub busy: AtomicUsize,
    /// Requests ended because their client went away.
    pub cancelled: AtomicU64,
    /// Requests ended by their deadline.
    pub timed_out: AtomicU64,
    /// Prompt tokens reused from slot caches.
    pub reused_tokens: AtomicU64,
    /// Prompt tokens evaluated.
    pub prompt_tokens: AtomicU64,
    /// Tokens generated.
    pub generated_tokens: AtomicU64,
    /// Batched forward passes.
    pub steps: AtomicU64,
    /// Sum over steps of the slots in the step (mean batch = this / steps).
    pub step_slots: AtomicU64,
    /// Bytes of one slot's KV cache when its context is full (it grows as it fills).
    pub slot_cache_bytes: AtomicUsize,
}

/// The handle through which requests reach the scheduler thread.
#[derive(Debug, Clone)]
pub struct Scheduler {
    queue: SyncSender<Job>,
    options: SchedulerOptions,
    stats: Arc<SchedulerStats>,
}

impl Scheduler {
    /// Starts the scheduler thread for `engine`. It runs until every handle is dropped.
    pub fn start(engine: Arc<Engine>, options: SchedulerOptions) -> std::io::Result<Scheduler> {
        let (tx, rx) = sync_channel(options.queue);
        let stats = Arc::new(SchedulerStats::default());
        let probe = engine.new_session_with_context(options.slot_context);
        stats
            .slot_cache_bytes
            .store(probe.max_cache_bytes(), Ordering::Relaxed);
        let worker = Worker {
            engine,
            options,
            stats: stats.clone(),
            queue: rx,
            slots: Vec::new(),
            idle: vec![(probe, Instant::now())],
            sessions: 1,
        };
        std::thread::Builder::new()
            .name("shuku-serve-scheduler".into())
            .spawn(move || worker.run())?;
        Ok(Scheduler {
            queue: tx,
            options,
            stats,
        })
    }

    /// Queues a request, or refuses it at once with 429 when the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), ApiError> {
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        match self.queue.try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.stats.queued.fetch_sub(1, Ordering::Relaxed);
                Err(match e {
                    std::sync::mpsc::TrySendError::Full(_) => {
                        ApiError::queue_full(self.options.queue)
                    }
                    std::sync::mpsc::TrySendError::Disconnected(_) => {
                        ApiError::unavailable("the decoding thread has stopped")
                    }
                })
            }
        }
    }

    /// The options it runs with.
    pub fn options(&self) -> SchedulerOptions {
        self.options
    }

    /// Its counters.
    pub fn stats(&self) -> &SchedulerStats {
        &self.stats
    }
}

/// Where a slot is in its request.
enum Stage {
    /// Prompt tokens `[..read]` are in the cache.
    Prompt { read: usize },
    /// The token to evaluate next.
    Decode([u32; 1]),
}

struct Slot {
    job: Job,
    session: Session,
    sequence: Sequence,
    stage: Stage,
    reused: usize,
    queued: Duration,
}

struct Worker {
    engine: Arc<Engine>,
    options: SchedulerOptions,
    stats: Arc<SchedulerStats>,
    queue: Receiver<Job>,
    slots: Vec<Slot>,
    /// Idle caches and when each was last used.
    idle: Vec<(Session, Instant)>,
    /// Caches created so far (at most `parallel`).
    sessions: usize,
}

impl Worker {
    fn run(mut self) {
        loop {
            if !self.admit() {
                return;
            }
            self.drop_gone();
            if !self.slots.is_empty() {
                self.step();
            }
            self.stats.busy.store(self.slots.len(), Ordering::Relaxed);
        }
    }

    /// Moves queued requests into free slots; blocks while there is nothing to do. False when
    /// every handle is gone and nothing is active.
    fn admit(&mut self) -> bool {
        while self.slots.len() < self.options.parallel {
            let job = if self.slots.is_empty() {
                // Idle: wait, waking now and then only to notice a closed queue.
                match self.queue.recv_timeout(Duration::from_secs(3600)) {
                    Ok(j) => j,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return false,
                }
            } else {
                match self.queue.try_recv() {
                    Ok(j) => j,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => break,
                }
            };
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            self.start(job);
        }
        true
    }

    fn start(&mut self, job: Job) {
        if job.events.is_closed() {
            self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let queued = job.submitted.elapsed();
        if Instant::now() >= job.deadline {
            self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
            let _ = job.events.send(Event::Failed(ApiError::timeout(format!(
                "the request waited {:.1} s for a slot and ran out of time",
                queued.as_secs_f64()
            ))));
            return;
        }
        let mut session = self.take_session(&job.prompt);
        let reused = session.reuse_prefix(&job.prompt);
        let mut sequence = Sequence::new(
            self.engine.tokenizer(),
            session.tokens(),
            &job.prompt[reused..],
            job.params.clone(),
        );
        if let Some(c) = job.constraint.clone() {
            sequence = sequence.with_constraint(c);
        }
        self.stats
            .reused_tokens
            .fetch_add(reused as u64, Ordering::Relaxed);
        self.slots.push(Slot {
            job,
            session,
            sequence,
            stage: Stage::Prompt { read: reused },
            reused,
            queued,
        });
    }

    /// The idle cache sharing the longest prefix with `prompt`; a new one while fewer than
    /// `parallel` exist; else the least recently used.
    fn take_session(&mut self, prompt: &[u32]) -> Session {
        let common = |s: &Session| {
            s.tokens()
                .iter()
                .zip(prompt)
                .take_while(|(a, b)| a == b)
                .count()
        };
        let best = (0..self.idle.len()).max_by_key(|&i| (common(&self.idle[i].0), i));
        if let Some(i) = best.filter(|&i| common(&self.idle[i].0) > 0) {
            return self.idle.swap_remove(i).0;
        }
        if self.sessions < self.options.parallel {
            self.sessions += 1;
            return self
                .engine
                .new_session_with_context(self.options.slot_context);
        }
        let oldest = (0..self.idle.len())
            .min_by_key(|&i| self.idle[i].1)
            .expect("a free slot has an idle cache");
        self.idle.swap_remove(oldest).0
    }

    /// Ends slots whose client went away or whose deadline passed.
    fn drop_gone(&mut self) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.slots.len() {
            let slot = &mut self.slots[i];
            if slot.job.events.is_closed() {
                self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
                let slot = self.slots.swap_remove(i);
                self.idle.push((slot.session, now));
            } else if now >= slot.job.deadline {
                self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                if let Some(t) = slot.sequence.end(FinishReason::Length) {
                    let _ = slot.job.events.send(Event::Token(t));
                }
                let slot = self.slots.swap_remove(i);
                self.finish(slot, Finish::Timeout);
            } else {
                i += 1;
            }
        }
    }

    /// One batched forward pass over every slot, then one sampled token per slot whose prompt is
    /// read.
    fn step(&mut self) {
        // Decoding slots first (one token each), then prompt chunks in the room left.
        let mut budget = self.options.ubatch;
        let mut plan: Vec<(usize, std::ops::Range<usize>)> = Vec::new();
        for (i, s) in self.slots.iter().enumerate() {
            if matches!(s.stage, Stage::Decode(_)) && budget > 0 {
                plan.push((i, 0..1));
                budget -= 1;
            }
        }
        for (i, s) in self.slots.iter().enumerate() {
            if let Stage::Prompt { read } = s.stage {
                if budget == 0 {
                    break;
                }
                let end = s.job.prompt.len().min(read + budget);
                budget -= end - read;
                plan.push((i, read..end));
            }
        }
        plan.sort_by_key(|(i, _)| *i);
        let t = Instant::now();
        let result = {
            let mut items: Vec<BatchItem> = Vec::with_capacity(plan.len());
            let mut planned = plan.iter().peekable();
            for (i, slot) in self.slots.iter_mut().enumerate() {
                let Some((_, range)) = planned.next_if(|(j, _)| *j == i) else {
                    continue;
                };
                let tokens: &[u32] = match &slot.stage {
                    Stage::Decode(t) => t,
                    Stage::Prompt { .. } => &slot.job.prompt[range.clone()],
                };
                items.push(BatchItem {
                    session: &mut slot.session,
                    tokens,
                });
            }
            self.engine.forward_batch(&mut items)
        };
        let elapsed = t.elapsed();
        self.stats.steps.fetch_add(1, Ordering::Relaxed);
        self.stats
            .step_slots
            .fetch_add(plan.len() as u64, Ordering::Relaxed);
        let logits = match result {
            Ok(l) => l,
            Err(e) => {
                // The plan was checked when the requests were accepted; fail the batch, not the
                // server.
                // Highest index first, so swap_remove leaves the lower indices in place.
                for (i, _) in plan.iter().rev() {
                    let slot = self.slots.swap_remove(*i);
                    let _ = slot
                        .job
                        .events
                        .send(Event::Failed(ApiError::internal(format!(
                            "evaluation failed: {e}"
                        ))));
                    self.idle.push((slot.session, Instant::now()));
                }
                return;
            }
        };
        let mut finished = Vec::new();
        for ((i, range), logits) in plan.iter().zip(&logits) {
            let slot = &mut self.slots[*i];
            match &mut slot.stage {
                Stage::Prompt { read } => {
                    *read = range.end;
                    self.stats
                        .prompt_tokens
                        .fetch_add(range.len() as u64, Ordering::Relaxed);
                    slot.sequence.record_prefill(range.len(), elapsed);
                    if *read < slot.job.prompt.len() {
                        continue;
                    }
                }
                Stage::Decode(_) => slot.sequence.record_decode(elapsed),
            }
            let full = slot.session.len() >= slot.session.context();
            match slot.sequence.step(self.engine.tokenizer(), logits, full) {
                Ok(step) => {
                    if let Some(t) = step.token {
                        if !t.is_eog {
                            self.stats.generated_tokens.fetch_add(1, Ordering::Relaxed);
                        }
                        let _ = slot.job.events.send(Event::Token(t));
                    }
                    match step.next {
                        Some(next) => slot.stage = Stage::Decode([next]),
                        None => finished.push((*i, None)),
                    }
                }
                Err(e) => finished.push((*i, Some(e))),
            }
        }
        // Highest index first, so swap_remove leaves the lower indices in place.
        finished.sort_by_key(|(i, _)| std::cmp::Reverse(*i));
        for (i, err) in finished {
            let slot = self.slots.swap_remove(i);
            match err {
                None => {
                    let reason = slot
                        .sequence
                        .summary()
                        .map_or(FinishReason::Length, |g| g.finish_reason);
                    self.finish(slot, Finish::Engine(reason));
                }
                Some(e) => {
                    let _ = slot.job.events.send(Event::Failed(ApiError {
                        code: Some("generation_failed"),
                        ..ApiError::internal(format!("generation failed: {e}"))
                    }));
                    self.idle.push((slot.session, Instant::now()));
                }
            }
        }
    }

    fn finish(&mut self, mut slot: Slot, finish: Finish) {
        if let Some(generation) = slot.sequence.take_summary() {
            let _ = slot.job.events.send(Event::Done(Box::new(Outcome {
                finish,
                generation,
                reused_tokens: slot.reused,
                queued: slot.queued,
            })));
        }
        self.idle.push((slot.session, Instant::now()));
    }
}
