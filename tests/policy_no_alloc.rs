//! Checks the "no allocation per hit in steady state" guarantee with a counting global
//! allocator: after warm-up, `on_hit` (and a steady-state miss + evict on a full cache,
//! once the slab and maps have reached their high-water mark) must not allocate.

use cidcache::policy::{new_policy, PolicyConfig, PolicyKind};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    // `const` initialisation: accessing it never allocates.
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> usize {
    ALLOCS.with(Cell::get)
}

#[test]
fn hits_and_steady_state_misses_do_not_allocate() {
    const CAP: u64 = 1_000;
    for kind in PolicyKind::ALL {
        let mut p = new_policy(kind, PolicyConfig::unit(CAP));
        let mut victims = Vec::with_capacity(16);
        // Warm up well past several full turnovers so ghosts and slabs reach steady size.
        let mut next = 0u64;
        for round in 0..20 {
            for _ in 0..CAP {
                p.on_insert(next, 1);
                next += 1;
                victims.clear();
                if p.resident_bytes() > CAP {
                    p.evict_into(p.resident_bytes() - CAP, &mut |_| true, &mut victims);
                }
                if round % 2 == 0 {
                    p.on_hit(next.saturating_sub(3));
                }
            }
        }
        let before = allocs();
        for i in 0..10 * CAP {
            // Resident, non-resident and long-gone ids alike.
            p.on_hit(next - 1 - (i % (2 * CAP)));
            p.on_hit(i);
        }
        assert_eq!(allocs() - before, 0, "{kind}: on_hit allocated");

        let before = allocs();
        for _ in 0..CAP {
            p.on_insert(next, 1);
            next += 1;
            victims.clear();
            p.evict_into(1, &mut |_| true, &mut victims);
        }
        assert_eq!(allocs() - before, 0, "{kind}: steady-state miss allocated");
    }
}
