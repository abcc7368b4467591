//! Plans: what the gateway half of a request hands to its attempts. Both
//! halves run in the same VM and on the same worker thread (the attempt
//! filter shares the gateway filter's `vm_id` and code), so a thread-local
//! map keyed by a per-VM id carries it; the id travels in `PLAN_HEADER`.
//! The gateway half holds a `Ticket`, whose drop removes the plan: no plan
//! outlives its request, and the map is bounded besides.
//!
//! Why the plan carries so much: Envoy hands every attempt the *same*
//! request header map, so what one attempt's filter changed (path,
//! authority, credential, removed headers) is what the next attempt starts
//! from. An attempt therefore works only from the plan, overwrites what it
//! sets, removes the other targets' credential headers, and never removes
//! the plan header (a per-VM counter; the provider sees it).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use sluice_records::Attempt;

use crate::api::{ClientApi, Endpoint};
use crate::canonical::{Request, Warnings};
use crate::gateway::ProviderEntry;

/// Plans alive at once in one VM (requests of resilient models in flight
/// on one worker); past it a request is refused with 503 rather than the
/// map growing.
pub const MAX_PLANS: usize = 16_384;

/// One place the model can be served from, as the attempt needs it.
#[derive(Debug)]
pub struct PlannedTarget {
    pub provider: Rc<ProviderEntry>,
    pub upstream_model: String,
    pub price: Option<sluice_config::TokenPrice>,
}

/// One attempt as it happened.
#[derive(Debug, Clone)]
pub struct AttemptLog {
    /// Index in `Plan::targets`.
    pub target: usize,
    pub started_ms: u64,
    /// The provider's status; 0 while (or if never) answered.
    pub status: u16,
    pub latency_ms: u64,
    /// What the translation for this attempt's provider could not carry.
    pub warnings: Warnings,
    /// The attempt filter answered it itself (the request could not be made
    /// for this provider): rendered in the client's API by the gateway half.
    pub local_error: Option<crate::error::GatewayError>,
}

#[derive(Debug)]
pub struct Plan {
    pub api: &'static dyn ClientApi,
    pub endpoint: Endpoint,
    pub public_model: String,
    pub stream: bool,
    /// The client sent no version header (passthrough gets the backend's).
    pub client_version_missing: bool,
    /// The request decoded once, when a target of another wire needs it.
    pub canonical: Option<Request>,
    /// The client's body (after request guardrails), when a target of the
    /// same wire passes it through: an attempt encodes from what the client
    /// sent, never from what an earlier attempt made of it.
    pub body: Option<Vec<u8>>,
    pub targets: Vec<PlannedTarget>,
    pub attempts: Vec<AttemptLog>,
}

impl Plan {
    /// The target an attempt went to, by the endpoint's metadata.
    pub fn target_index(&self, provider: &str, model: &str) -> Option<usize> {
        self.targets
            .iter()
            .position(|t| t.provider.name == provider && t.upstream_model == model)
    }

    /// The attempts as the usage record lists them.
    pub fn attempt_records(&self) -> Vec<Attempt> {
        self.attempts
            .iter()
            .map(|a| {
                let t = self.targets.get(a.target);
                Attempt {
                    provider: t.map(|t| t.provider.name.clone()).unwrap_or_default(),
                    upstream_model: t.map(|t| t.upstream_model.clone()).unwrap_or_default(),
                    status: a.status,
                    latency_ms: a.latency_ms,
                    outcome: Attempt::outcome_of(a.status).into(),
                }
            })
            .collect()
    }
}

#[derive(Default)]
struct Registry {
    next: u64,
    plans: HashMap<u64, Plan>,
}

thread_local! {
    static PLANS: RefCell<Registry> = RefCell::new(Registry::default());
}

/// The gateway half's hold on its plan; dropping it removes the plan.
#[derive(Debug)]
pub struct Ticket(u64);

impl Ticket {
    pub fn id(&self) -> u64 {
        self.0
    }

    /// Runs `f` on the plan (None if it is gone).
    pub fn with<R>(&self, f: impl FnOnce(&mut Plan) -> R) -> Option<R> {
        with_plan(self.0, f)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // `try_with`: a ticket dropped while the thread-local is being
        // torn down (thread exit) has nothing left to remove.
        let _ = PLANS.try_with(|r| {
            if let Ok(mut r) = r.try_borrow_mut() {
                r.plans.remove(&self.0);
            }
        });
    }
}

/// Registers a plan; None when `MAX_PLANS` are alive.
pub fn register(plan: Plan) -> Option<Ticket> {
    PLANS.with(|r| {
        let mut r = r.try_borrow_mut().ok()?;
        if r.plans.len() >= MAX_PLANS {
            return None;
        }
        r.next = r.next.wrapping_add(1);
        let id = r.next;
        r.plans.insert(id, plan);
        Some(Ticket(id))
    })
}

/// Runs `f` on the plan with this id (None if there is none).
pub fn with_plan<R>(id: u64, f: impl FnOnce(&mut Plan) -> R) -> Option<R> {
    PLANS.with(|r| {
        let mut r = r.try_borrow_mut().ok()?;
        r.plans.get_mut(&id).map(f)
    })
}

/// Plans alive in this VM (tests, and a bound check).
pub fn alive() -> usize {
    PLANS.with(|r| r.try_borrow().map(|r| r.plans.len()).unwrap_or(0))
}
