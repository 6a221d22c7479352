// Relacy models of Lariv's synchronisation (RELIABILITY.md L4): the real slot_protocol code and the
// real container, run on relacy's atomics through an adapter, under its weak-memory scheduler.
// TSan on x86 cannot see a missing acquire/release; relacy can.
//
//   lariv_relacy [--mutants] [--iterations N]
//
// Without --mutants every model must pass. With --mutants the same models run on an adapter that
// weakens one class of orderings to relaxed, and every mutant must be caught (L8): the binary
// fails if a mutant passes.
//
// The project's headers come first: relacy's macros clash with libstdc++ headers included after it.
void model_yield();
#define LARIV_BACKOFF_HOOK() model_yield()
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <iostream>
#include <string>

#include "lariv/detail/slot.hpp"
#include "lariv/lariv.hpp"

#include <relacy/relacy.hpp>
// relacy redefines these for its own std-like mode; this file uses std:: and rl:: names directly.
#undef memory_order_relaxed
#undef memory_order_consume
#undef memory_order_acquire
#undef memory_order_release
#undef memory_order_acq_rel
#undef memory_order_seq_cst
#undef delete
#undef new

/// Waiting loops (take, get_mut, growth) yield to relacy's scheduler instead of the OS.
void model_yield() { rl::yield(1, $); }

namespace {

enum class mutation { none, release_stores, acquire_cas, rmw_relaxed, acquire_loads, no_fences, no_validate };
mutation g_mutation = mutation::none;

rl::memory_order map_order(std::memory_order o) {
    switch (o) {
        case std::memory_order_relaxed:
            return rl::mo_relaxed;
        case std::memory_order_consume:
            return rl::mo_consume;
        case std::memory_order_acquire:
            return rl::mo_acquire;
        case std::memory_order_release:
            return rl::mo_release;
        case std::memory_order_acq_rel:
            return rl::mo_acq_rel;
        default:
            return rl::mo_seq_cst;
    }
}

/// std::atomic-shaped adapter over rl::atomic. A mutation weakens one class of orders.
template <class U>
class rl_atomic {
public:
    rl_atomic() { a_($).store(U{}, rl::mo_relaxed); }
    rl_atomic(U v) { a_($).store(v, rl::mo_relaxed); }  // NOLINT: as std::atomic
    rl_atomic(const rl_atomic&) = delete;
    rl_atomic& operator=(const rl_atomic&) = delete;

    U load(std::memory_order o) const {
        if (g_mutation == mutation::acquire_loads) {
            o = std::memory_order_relaxed;
        }
        return a_($).load(map_order(o));
    }
    void store(U v, std::memory_order o) {
        if (g_mutation == mutation::release_stores) {
            o = std::memory_order_relaxed;
        }
        a_($).store(v, map_order(o));
    }
    bool compare_exchange_weak(U& e, U d, std::memory_order s, std::memory_order f) {
        return a_($).compare_exchange_weak(e, d, map_order(cas(s)), map_order(f));
    }
    bool compare_exchange_strong(U& e, U d, std::memory_order s, std::memory_order f) {
        return a_($).compare_exchange_strong(e, d, map_order(cas(s)), map_order(f));
    }
    U fetch_add(U d, std::memory_order o) { return a_($).fetch_add(d, map_order(rmw(o))); }
    U fetch_sub(U d, std::memory_order o) { return a_($).fetch_sub(d, map_order(rmw(o))); }

private:
    static std::memory_order cas(std::memory_order o) {
        if (g_mutation == mutation::acquire_cas && o == std::memory_order_acquire) {
            return std::memory_order_relaxed;
        }
        if (g_mutation == mutation::acquire_cas && o == std::memory_order_acq_rel) {
            return std::memory_order_release;
        }
        return o;
    }
    static std::memory_order rmw(std::memory_order o) {
        return g_mutation == mutation::rmw_relaxed ? std::memory_order_relaxed : o;
    }
    mutable rl::atomic<U> a_;
};

}  // namespace

/// The slot protocol's fences ([P9b], [P9c]) on relacy's model; the no_fences mutant drops them.
template <>
struct lariv::detail::fence_of<rl_atomic<lariv::detail::word_t>> {
    static void apply(std::memory_order o) {
        if (g_mutation != mutation::no_fences) {
            rl::atomic_thread_fence(map_order(o), $);
        }
    }
};

namespace {

using word_atomic = rl_atomic<lariv::detail::word_t>;
using proto = lariv::detail::slot_protocol<word_atomic, 32>;
using sw = lariv::detail::slot_word;
using lariv::detail::slot_state;

// The element storage of one slot: a plain (relacy-checked) variable. "Construct" writes the
// value, "destroy" writes the poison -1: a destroy that races with a guard's read is a data race.
struct slot_model {
    word_atomic word{sw::make(1, slot_state::free)};
    rl::var<int> value;
    int destroyed = 0;  // touched only by the destroying thread, checked after the run

    void construct(int v) { value($) = v; }
    void destroy() {
        value($) = -1;
        ++destroyed;
        proto::release_slot(word);
    }
    void make_live(int v) {  // set-up in before(): claimed, constructed and published at g=1
        RL_ASSERT(proto::try_claim(word) == 1);
        construct(v);
        proto::publish(word, 1);
    }
};

// (a) push publishes the value: a reader that pins sees it constructed.
struct model_publish : rl::test_suite<model_publish, 2> {
    slot_model s;
    void thread(unsigned id) {
        if (id == 0) {
            const std::uint32_t g = proto::try_claim(s.word);
            RL_ASSERT(g == 1);
            s.construct(42);
            proto::publish(s.word, g);
        } else if (proto::try_pin(s.word, 1, false) == lariv::detail::pin_result::ok) {
            RL_ASSERT(s.value($) == 42);
            RL_ASSERT(!proto::unpin(s.word, false));
        }
    }
};

// (b) a guard racing remove: the value is destroyed exactly once, after the guard's last read.
struct model_pin_remove : rl::test_suite<model_pin_remove, 2> {
    slot_model s;
    void before() { s.make_live(42); }
    void thread(unsigned id) {
        if (id == 0) {
            if (proto::try_pin(s.word, 1, false) == lariv::detail::pin_result::ok) {
                RL_ASSERT(s.value($) == 42);
                if (proto::unpin(s.word, false)) {
                    s.destroy();
                }
            }
        } else {
            const auto r = proto::try_kill(s.word, 1, false);
            RL_ASSERT(r.won);
            if (r.destroy_now) {
                s.destroy();
            }
        }
    }
    void after() {
        RL_ASSERT(s.destroyed == 1);
        const auto w = s.word.load(std::memory_order_relaxed);
        RL_ASSERT(sw::state(w) == slot_state::free && sw::gen(w) == 2);
    }
};

// (c) two removers: exactly one wins, and the value is destroyed once.
struct model_double_remove : rl::test_suite<model_double_remove, 2> {
    slot_model s;
    int wins[2] = {0, 0};
    void before() { s.make_live(42); }
    void thread(unsigned id) {
        const auto r = proto::try_kill(s.word, 1, false);
        wins[id] = r.won ? 1 : 0;
        if (r.destroy_now) {
            s.destroy();
        }
    }
    void after() {
        RL_ASSERT(wins[0] + wins[1] == 1);
        RL_ASSERT(s.destroyed == 1);
    }
};

// (d) take with a writer holding the element: the taker waits, then moves the written value out.
struct model_take : rl::test_suite<model_take, 2> {
    slot_model s;
    int taken = 0;
    void before() { s.make_live(42); }
    void thread(unsigned id) {
        if (id == 0) {
            const auto r = proto::try_kill(s.word, 1, true);
            RL_ASSERT(r.won && !r.destroy_now);
            proto::wait_sole_pin(s.word);
            taken = s.value($);  // the "move"
            RL_ASSERT(proto::unpin(s.word, false));
            s.destroy();
        } else if (proto::try_pin(s.word, 1, true) == lariv::detail::pin_result::ok) {
            s.value($) = 43;  // exclusive guard writes
            if (proto::unpin(s.word, true)) {
                s.destroy();
            }
        }
    }
    void after() {
        RL_ASSERT(taken == 42 || taken == 43);
        RL_ASSERT(s.destroyed == 1);
    }
};

// (g) a take whose move throws puts the element back (revive [P8]) while another thread pins and
// then removes: the failed move's write is visible to the next guard, the value is destroyed at
// most once, and a revived slot is LIVE(1) with no pin left behind.
struct model_take_revive : rl::test_suite<model_take_revive, 2> {
    slot_model s;
    bool killed_by_1 = false;
    void before() { s.make_live(42); }
    void thread(unsigned id) {
        if (id == 0) {
            const auto r = proto::try_kill(s.word, 1, true);
            if (r.won) {
                proto::wait_sole_pin(s.word);
                s.value($) = 44;  // what the throwing move constructor did to its source
                proto::revive(s.word, 1);
            }
        } else {
            if (proto::try_pin(s.word, 1, false) == lariv::detail::pin_result::ok) {
                const int v = s.value($);
                RL_ASSERT(v == 42 || v == 44);
                if (proto::unpin(s.word, false)) {
                    s.destroy();
                }
            }
            const auto r = proto::try_kill(s.word, 1, false);
            killed_by_1 = r.won;
            if (r.destroy_now) {
                s.destroy();
            }
        }
    }
    void after() {
        const auto w = s.word.load(std::memory_order_relaxed);
        if (killed_by_1) {
            RL_ASSERT(s.destroyed == 1);
            RL_ASSERT(sw::state(w) == slot_state::free && sw::gen(w) == 2);
        } else {
            // The remove ran while the take had the element: it is back, unpinned, not destroyed.
            RL_ASSERT(s.destroyed == 0);
            RL_ASSERT(sw::state(w) == slot_state::live && sw::gen(w) == 1 && sw::pins(w) == 0);
            RL_ASSERT(s.value($) == 44);
        }
    }
};

// (f) a stale pin racing reuse: an index of generation 1 never reads the generation-2 value, and
// the reuse never writes under a reader (no validate-then-read).
struct model_pin_reuse : rl::test_suite<model_pin_reuse, 2> {
    slot_model s;
    void before() { s.make_live(42); }
    void thread(unsigned id) {
        if (id == 0) {
            if (proto::try_pin(s.word, 1, false) == lariv::detail::pin_result::ok) {
                RL_ASSERT(s.value($) == 42);
                if (proto::unpin(s.word, false)) {
                    s.destroy();
                }
            }
        } else {
            const auto r = proto::try_kill(s.word, 1, false);
            if (r.destroy_now) {
                s.destroy();
            }
            const std::uint32_t g = proto::try_claim(s.word);
            if (g != 0) {
                RL_ASSERT(g == 2);
                s.construct(43);
                proto::publish(s.word, g);
            }
        }
    }
};

// Snapshot reads [P9]: the slot's bytes are an atomic (the container stores and copies them with
// relaxed atomic accesses); the model checks what a reader may return, not data races.
struct snap_slot {
    word_atomic word{sw::make(1, slot_state::free)};
    rl::atomic<int> value;
    // What the claimer does in try_emplace: claim, [P9c], relaxed stores, publish.
    bool push(int v, std::uint32_t want_gen) {
        const std::uint32_t g = proto::try_claim(word);
        if (g == 0) {
            return false;
        }
        RL_ASSERT(g == want_gen);
        proto::before_value_store();
        value($).store(v, rl::mo_relaxed);
        proto::publish(word, g);
        return true;
    }
    // What load() does; -1 is a miss.
    int load(std::uint32_t g) {
        if (!proto::snapshot_open(word, g)) {
            return -1;
        }
        const int v = value($).load(rl::mo_relaxed);
        if (g_mutation != mutation::no_validate && !proto::snapshot_validate(word, g)) {
            return -1;
        }
        return v;
    }
};

// (h) a snapshot racing push: a reader that sees generation 1 live reads its constructed value.
struct model_snapshot_publish : rl::test_suite<model_snapshot_publish, 2> {
    snap_slot s;
    void before() { s.value($).store(0, rl::mo_relaxed); }
    void thread(unsigned id) {
        if (id == 0) {
            RL_ASSERT(s.push(42, 1));
        } else {
            const int v = s.load(1);
            RL_ASSERT(v == -1 || v == 42);
        }
    }
};

// (i) a stale snapshot racing remove and reuse: an index of generation 1 returns its own value or
// nothing, never generation 2's, although nothing stops the slot from being reused under it.
struct model_snapshot_reuse : rl::test_suite<model_snapshot_reuse, 2> {
    snap_slot s;
    void before() { RL_ASSERT(s.push(42, 1)); }
    void thread(unsigned id) {
        if (id == 0) {
            const int v = s.load(1);
            RL_ASSERT(v == -1 || v == 42);
        } else {
            const auto r = proto::try_kill(s.word, 1, false);
            RL_ASSERT(r.won && r.destroy_now);
            proto::release_slot(s.word);  // the destructor is trivial: nothing to write
            RL_ASSERT(s.push(43, 2));
        }
    }
};

// (e) the real container: two threads push into a full single-slot ring at once; exactly one
// links the new buffer, nothing is lost, and each value is read back through its index.
struct rl_traits {
    template <class U>
    using atomic = rl_atomic<U>;
    static constexpr unsigned generation_bits = 32;
    // Relacy runs its threads as fibers of one OS thread, which would all own lane 0: use only
    // the shared lane (atomic adds), which is what two threads sharing a lane do.
    static constexpr std::size_t lanes = 1;
};
/// Plain aligned allocation: relacy replaces the global operator new/delete with its own heap but
/// not the aligned forms, so the container's buffers must not mix the two.
template <class T>
struct plain_allocator {
    using value_type = T;
    plain_allocator() = default;
    template <class U>
    plain_allocator(const plain_allocator<U>&) {}  // NOLINT: rebinding
    T* allocate(std::size_t n) {
        const std::size_t bytes = (n * sizeof(T) + 63) / 64 * 64;
        return static_cast<T*>(std::aligned_alloc(64, bytes));
    }
    void deallocate(T* p, std::size_t) { (std::free)(p); }
    template <class U>
    bool operator==(const plain_allocator<U>&) const {
        return true;
    }
};
struct model_growth : rl::test_suite<model_growth, 2> {
    using container = lariv::Lariv<int, rl_traits, plain_allocator<int>>;
    std::optional<container> l;
    lariv::Index got[2];
    void before() {
        l.emplace(lariv::Options{.buffer_capacity = 1, .claim_batch = 1});
        (void)l->push(7);  // fills the only slot
    }
    void thread(unsigned id) { got[id] = l->push(static_cast<int>(id)); }
    void after() {
        RL_ASSERT(got[0] != got[1]);
        RL_ASSERT(l->node_count() == 3);
        RL_ASSERT(*l->get(got[0]) == 0);
        RL_ASSERT(*l->get(got[1]) == 1);
        RL_ASSERT(l->size() == 3);
        l.reset();
    }
};

template <class Model>
bool run(const char* name, rl::scheduler_type_e sched, unsigned iterations, bool quiet) {
    rl::test_params p;
    p.search_type = sched;
    p.iteration_count = iterations;
    p.context_bound = 2;
    // A stream without a buffer discards everything and allocates nothing (relacy's heap is live
    // while it prints). Unexpected failures print relacy's history to stdout.
    static std::ostream discard(nullptr);
    p.output_stream = quiet ? &discard : &std::cout;
    p.progress_stream = &discard;
    const bool ok = rl::simulate<Model>(p);
    std::printf("  %-22s %-8s %s after %llu iterations\n", name,
                sched == rl::sched_random ? "random" : "bound-2", ok ? "passed" : "FAILED",
                static_cast<unsigned long long>(p.stop_iteration ? p.stop_iteration : iterations));
    return ok;
}

template <class Model>
bool both(const char* name, unsigned iterations, bool quiet) {
    bool ok = run<Model>(name, rl::sched_random, iterations, quiet);
    ok = run<Model>(name, rl::sched_bound, iterations, quiet) && ok;
    return ok;
}

bool all_models(unsigned iterations, bool quiet) {
    bool ok = true;
    ok = both<model_publish>("publish", iterations, quiet) && ok;
    ok = both<model_pin_remove>("pin-vs-remove", iterations, quiet) && ok;
    ok = both<model_double_remove>("double-remove", iterations, quiet) && ok;
    ok = both<model_take>("take-vs-writer", iterations, quiet) && ok;
    ok = both<model_take_revive>("take-throws-revive", iterations, quiet) && ok;
    ok = both<model_pin_reuse>("pin-vs-reuse", iterations, quiet) && ok;
    ok = both<model_snapshot_publish>("snapshot-vs-push", iterations, quiet) && ok;
    ok = both<model_snapshot_reuse>("snapshot-vs-reuse", iterations, quiet) && ok;
    // The container model's state space is large (a bound-2 search takes ~7e6 iterations and
    // 90 s): random schedules only in the per-commit tier.
    // Not in mutant runs: a weakened container reads real pointers and corrupts the real heap.
    if (g_mutation == mutation::none) {
        ok = run<model_growth>("container-growth", rl::sched_random, iterations / 10, quiet) && ok;
    }
    return ok;
}

}  // namespace

int main(int argc, char** argv) {
    // Take this thread's Lariv thread number (and its registry's allocation) before any model
    // runs: relacy would report an allocation made inside a model and never freed as a leak.
    (void)lariv::detail::this_thread_number();
    bool mutants = false;
    unsigned iterations = 200000;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--mutants") == 0) {
            mutants = true;
        } else if (std::strcmp(argv[i], "--iterations") == 0 && i + 1 < argc) {
            iterations = static_cast<unsigned>(std::strtoul(argv[++i], nullptr, 10));
        }
    }
    if (!mutants) {
        std::printf("relacy: models of the slot protocol and the container\n");
        const bool ok = all_models(iterations, false);
        std::printf(ok ? "PASS\n" : "FAIL\n");
        return ok ? 0 : 1;
    }
    // Each mutant weakens one class of orderings; the models taken together must catch each.
    struct {
        mutation m;
        const char* name;
    } const list[] = {{mutation::release_stores, "release stores -> relaxed ([P2],[P6],[P8])"},
                      {mutation::acquire_cas, "acquire CAS -> relaxed ([P1],[P3],[P4])"},
                      {mutation::rmw_relaxed, "unpin fetch_sub -> relaxed ([P5])"},
                      {mutation::acquire_loads, "acquire loads -> relaxed ([P7],[P9a])"},
                      {mutation::no_validate, "snapshot copy not validated ([P9])"}};
    // Not in the list: no_fences (dropping [P9b]/[P9c]). To show it, a reader must load the word
    // two stores stale (DEAD(1) behind FREE(2), CLAIMED(2)) in the one step between the new
    // value's store and its publish; relacy keeps 3 stores of history per atomic and its random
    // scheduler did not produce that in 10^6 iterations, so the mutant passes. The argument for
    // the fences is in detail/slot.hpp ([P9]); on x86 both compile to no instruction.
    bool all_caught = true;
    for (const auto& m : list) {
        g_mutation = m.m;
        std::printf("mutant: %s\n", m.name);
        const bool passed = all_models(iterations / 2, true);
        std::printf("  => %s\n", passed ? "NOT CAUGHT" : "caught");
        all_caught = all_caught && !passed;
    }
    g_mutation = mutation::none;
    std::printf(all_caught ? "PASS: every mutant was caught\n" : "FAIL: a mutant passed\n");
    return all_caught ? 0 : 1;
}
