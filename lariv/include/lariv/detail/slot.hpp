// lariv/detail/slot.hpp — the per-slot state word and every transition on it.
//
// This file is the whole synchronisation protocol of a slot. The container calls only these
// functions on a slot's word, and the relacy models (tests/lariv/relacy_slot.cpp) run the very same
// functions with relacy's atomics, so what the models check is the code that ships.
//
// Slot word (64 bits, one atomic, so it is lock-free and TSan-visible everywhere):
//
//   bits 63..32  generation   1 .. 2^G-1 (G = generation bits, 32 by default); 0 is never used
//   bits 31..3   pins         guards currently held on the element (readers + the writer)
//   bit  2       writer       an exclusive guard is held (then pins == 1)
//   bits 1..0    state        FREE=0, CLAIMED=1, LIVE=2, DEAD=3
//
// State diagram (g = generation, p = pins):
//
//            try_claim [P1]             publish [P2]
//   FREE(g) ----------------> CLAIMED(g) ------------> LIVE(g,p)  <-- try_pin / unpin [P3]/[P5]
//     ^                          |                        |
//     |        abandon [P6]      |                        | try_kill [P4] (remove / take)
//     +--------------------------+                        v      ^
//     |                                               DEAD(g,p)  | revive [P8]: a taker whose
//     |              release_slot [P6]                    |      | move threw, holding the only
//     +---------- FREE(next(g)) <-------------------------+      | pin: DEAD(g,1) -> LIVE(g,0)
//                                                            when p reaches 0: the thread that
//                                                            made it 0 destroys the value first
//
// Invariants (checked by asserts in debug builds and by the stress and relacy tests):
//   I1  The generation changes only on DEAD -> FREE, and then to next(g) != g, never to 0.
//   I2  An index (g, slot) resolves only while the word is LIVE with generation g: every access
//       path (try_pin, try_kill) compares generation and state in the same CAS that takes effect.
//   I3  Of the threads killing a slot while it is LIVE(g), exactly one moves it LIVE -> DEAD (the
//       CAS in try_kill). Only a revive (a take whose move threw) makes a generation LIVE again, and
//       then the next kill is again won by exactly one thread.
//   I4  The value is destroyed exactly once, by the thread whose transition left DEAD with p == 0:
//       the killer if p was 0 at the kill, else the last unpinner.
//   I5  No pin is taken on a slot that is not LIVE; so once DEAD, p only decreases. A DEAD slot
//       leaves DEAD only with p == 0 (release_slot) or, by revive, with the taker's pin the only
//       one (p == 1): then the taker alone owns the word and nobody else writes it.
//   I6  Only the claimer writes a CLAIMED word (publish or abandon); nobody else changes it.
//
// Synchronisation pairs (labels are repeated at both ends in the code):
//   [P2] release in publish      -> [P3]/[P4] acquire: the constructed value is visible to guards
//                                   and to the thread that will destroy it.
//   [P5] release in unpin        -> [P5] acquire of the last unpinner, [P4] acquire of a killer
//                                   that destroys, [P7] acquire of a taker waiting for the pins,
//                                   and [P3] acquire of the next writer: everything a guard did to
//                                   the value happens-before its destruction or the next writer.
//   [P6] release in release_slot -> [P1] acquire in try_claim: the old value's destructor
//                                   finished before the next value is constructed in its place.
//   [P8] release in revive       -> [P3]/[P4] acquire: whatever the taker's failed move did to
//                                   the value is visible to the next guard, killer or destroyer.
//   [P9] snapshot reads (containers with snapshot_reads only; values are then written only by
//        their constructor, as relaxed atomic stores, and never modified while LIVE):
//        [P9a] acquire load in snapshot_open -> pairs with [P2]: the bytes of generation g are
//              visible before the reader copies them.
//        [P9c] release fence in before_value_store, between a claimer's [P1] CAS and its relaxed
//              stores of the new value -> [P9b] acquire fence in snapshot_validate, after the
//              reader's relaxed loads of the bytes. If the reader read any byte of a later
//              generation, the fences synchronise, the claim CAS (generation != g) happens-before
//              the validating load, and by coherence that load sees a generation != g: the copy
//              is discarded. If the validating load still sees g, every byte came from g's
//              constructor. The reader writes nothing, so readers share the slot's cache line.
#pragma once

#include <atomic>
#include <cstdint>
#include <type_traits>

#include "lariv/detail/backoff.hpp"

namespace lariv::detail {

using word_t = std::uint64_t;

enum class slot_state : std::uint32_t { free = 0, claimed = 1, live = 2, dead = 3 };

/// Pure functions over the bits of a slot word.
struct slot_word {
    static constexpr word_t state_mask = 0x3;
    static constexpr word_t writer_bit = 0x4;
    static constexpr word_t pin_one = 0x8;
    static constexpr word_t pin_field = 0xFFFF'FFF8;  // 29 bits of pins
    static constexpr word_t max_pins = pin_field >> 3;

    static constexpr word_t make(std::uint32_t gen, slot_state st) noexcept {
        return (word_t{gen} << 32) | static_cast<word_t>(st);
    }
    static constexpr std::uint32_t gen(word_t w) noexcept {
        return static_cast<std::uint32_t>(w >> 32);
    }
    static constexpr slot_state state(word_t w) noexcept {
        return static_cast<slot_state>(w & state_mask);
    }
    static constexpr word_t pins(word_t w) noexcept { return (w & pin_field) >> 3; }
    static constexpr bool writer(word_t w) noexcept { return (w & writer_bit) != 0; }
};

/// The next generation after g with GenBits bits: wraps to 1, never 0 (I1). With 32 bits an index
/// can only be confused with a newer element after 2^32-1 reuses of its slot while it is held.
template <unsigned GenBits>
constexpr std::uint32_t next_generation(std::uint32_t g) noexcept {
    static_assert(GenBits >= 2 && GenBits <= 32);
    constexpr std::uint64_t mask = (std::uint64_t{1} << GenBits) - 1;
    const auto n = static_cast<std::uint32_t>((std::uint64_t{g} + 1) & mask);
    return n == 0 ? 1U : n;
}

enum class pin_result { ok, busy, absent };

struct kill_result {
    bool won;          ///< this thread moved LIVE -> DEAD (I3)
    bool destroy_now;  ///< and no guard was held: this thread destroys the value (I4)
};

/// Thread fences for an atomic type: std::atomic_thread_fence, or a model checker's fence for its
/// adapter (the relacy models specialise this).
template <class Atomic>
struct fence_of {
    static void apply(std::memory_order o) noexcept { std::atomic_thread_fence(o); }
};

/// Transitions of one slot word. `Atomic` is std::atomic<word_t> or a drop-in (relacy adapter,
/// chaos wrapper); every operation names its memory order.
template <class Atomic, unsigned GenBits>
struct slot_protocol {
    using w = slot_word;

    /// FREE(g) -> CLAIMED(g). Returns g on success, 0 if the slot was not free.
    static std::uint32_t try_claim(Atomic& word) noexcept {
        // relaxed: a pre-check only; the CAS below decides.
        word_t cur = word.load(std::memory_order_relaxed);
        if (w::state(cur) != slot_state::free) {
            return 0;
        }
        // [P1] acquire on success: pairs with [P6] release in release_slot/abandon, so the former
        // value's destructor is finished before we construct into the same storage.
        if (word.compare_exchange_strong(cur, w::make(w::gen(cur), slot_state::claimed),
                                         std::memory_order_acquire, std::memory_order_relaxed)) {
            return w::gen(cur);
        }
        return 0;
    }

    /// CLAIMED(g) -> LIVE(g, 0): the element becomes reachable.
    static void publish(Atomic& word, std::uint32_t g) noexcept {
        // [P2] release: publishes the value constructed by this thread; pairs with [P3] try_pin and
        // [P4] try_kill. A plain store suffices: only the claimer writes a CLAIMED word (I6).
        word.store(w::make(g, slot_state::live), std::memory_order_release);
    }

    /// CLAIMED(g) -> FREE(g): the constructor threw; no index escaped, so g is kept.
    static void abandon(Atomic& word, std::uint32_t g) noexcept {
        // [P6] release: the failed construction's writes happen-before the next claim [P1].
        word.store(w::make(g, slot_state::free), std::memory_order_release);
    }

    /// LIVE(g, p, no writer) -> LIVE(g, p+1) (shared) or LIVE(g, 0) -> LIVE(g, 1, writer)
    /// (exclusive). `busy`: a writer holds it, or (exclusive) readers do; `absent`: not LIVE(g).
    static pin_result try_pin(Atomic& word, std::uint32_t g, bool exclusive) noexcept {
        // relaxed: the CAS below re-validates the whole word.
        word_t cur = word.load(std::memory_order_relaxed);
        for (;;) {
            if (w::gen(cur) != g || w::state(cur) != slot_state::live) {
                return pin_result::absent;  // I2
            }
            if (w::writer(cur) || (exclusive && w::pins(cur) != 0) ||
                w::pins(cur) == w::max_pins) {
                return pin_result::busy;
            }
            const word_t next = cur + w::pin_one + (exclusive ? w::writer_bit : 0);
            // [P3] acquire on success: pairs with [P2] publish (the value is constructed) and
            // with [P5] unpin of an earlier writer (its modifications are visible).
            if (word.compare_exchange_weak(cur, next, std::memory_order_acquire,
                                           std::memory_order_relaxed)) {
                return pin_result::ok;
            }
        }
    }

    /// Drops one pin (and the writer bit for an exclusive guard). Returns true when the caller
    /// must destroy the value and call release_slot: the slot is DEAD and this was the last pin.
    static bool unpin(Atomic& word, bool exclusive) noexcept {
        const word_t delta = w::pin_one + (exclusive ? w::writer_bit : 0);
        // [P5] acq_rel: release orders this guard's accesses to the value before whoever destroys
        // it or writes it next; acquire because this thread may be the one that destroys (I4) and
        // must see the other guards' accesses ended (their [P5] releases).
        const word_t prev = word.fetch_sub(delta, std::memory_order_acq_rel);
        return w::state(prev) == slot_state::dead && w::pins(prev) == 1;
    }

    /// LIVE(g, p) -> DEAD(g, p [+1 if self_pin]). Of all threads killing the same (slot, g), exactly
    /// one wins (I3). With self_pin (take) the killer keeps a pin, so it, not a guard, destroys.
    static kill_result try_kill(Atomic& word, std::uint32_t g, bool self_pin) noexcept {
        // relaxed: the CAS below re-validates the whole word.
        word_t cur = word.load(std::memory_order_relaxed);
        for (;;) {
            if (w::gen(cur) != g || w::state(cur) != slot_state::live) {
                return {false, false};  // I2: stale, removed or never published
            }
            word_t next = (cur & ~w::state_mask) | static_cast<word_t>(slot_state::dead);
            if (self_pin) {
                next += w::pin_one;
            }
            // [P4] acq_rel on success: acquire pairs with [P2] publish and with [P5] unpins, as
            // this thread may destroy the value now; release keeps the kill ordered before the
            // destruction that a later unpinner performs (it acquires this word in [P5]).
            if (word.compare_exchange_weak(cur, next, std::memory_order_acq_rel,
                                           std::memory_order_relaxed)) {
                return {true, !self_pin && w::pins(cur) == 0};
            }
        }
    }

    /// For take(): after try_kill(g, true) won, waits until the taker's pin is the only one. New
    /// pins cannot appear (I5), so this waits only for guards that were already held.
    static void wait_sole_pin(Atomic& word) noexcept {
        backoff bo;
        // [P7] acquire: pairs with [P5] release of each guard that leaves, so their accesses
        // to the value happen-before the taker moves it out.
        while (w::pins(word.load(std::memory_order_acquire)) != 1) {
            bo.pause();
        }
    }

    /// For take(), when moving the value out threw: DEAD(g, 1) -> LIVE(g, 0). The caller won
    /// try_kill(g, true) and returned from wait_sole_pin, so its pin is the only one and nobody
    /// else writes the word (I5): a plain store suffices, and it drops the taker's pin. The
    /// generation is kept (I1), so the element is reachable again at the same index.
    static void revive(Atomic& word, std::uint32_t g) noexcept {
        // [P8] release: the taker's accesses to the value (the failed move) happen-before the next
        // pin [P3] or kill [P4] that acquires this word; the taker itself acquired the other
        // guards' accesses in [P7].
        word.store(w::make(g, slot_state::live), std::memory_order_release);
    }

    // ------------------------------------------------------------------ snapshot reads [P9]
    // A snapshot read copies the value without writing the word: open, copy the bytes with relaxed
    // atomic loads, validate. Only for containers whose values are written solely by their
    // constructor (as relaxed atomic stores after before_value_store) and never while LIVE.

    /// True if the word is LIVE(g) now: the bytes of generation g may be copied.
    static bool snapshot_open(const Atomic& word, std::uint32_t g) noexcept {
        // [P9a] acquire: pairs with [P2] publish; generation g's constructor stores are visible.
        const word_t cur = word.load(std::memory_order_acquire);
        return w::gen(cur) == g && w::state(cur) == slot_state::live;
    }

    /// After the copy: true if every byte copied belongs to generation g. The generation changes
    /// only on DEAD -> FREE (I1), so a word still at g (LIVE, or DEAD with the bytes untouched:
    /// the destructor is trivial) means no later constructor has stored into the slot.
    static bool snapshot_validate(const Atomic& word, std::uint32_t g) noexcept {
        // [P9b] acquire fence: pairs with [P9c] of any claimer whose stores the copy read.
        fence_of<Atomic>::apply(std::memory_order_acquire);
        // relaxed: ordered after the copy by the fence above.
        return w::gen(word.load(std::memory_order_relaxed)) == g;
    }

    /// Called by a claimer after try_claim succeeded and before it stores the new value's bytes.
    static void before_value_store() noexcept {
        // [P9c] release fence: orders the claim CAS (the new generation) before the value's
        // relaxed stores, for a snapshot reader that reads one of them ([P9b]).
        fence_of<Atomic>::apply(std::memory_order_release);
    }

    /// DEAD(g, 0) -> FREE(next(g)), after the value was destroyed (I1).
    static void release_slot(Atomic& word) noexcept {
        // relaxed: DEAD with no pins is owned by this thread alone (I5); nobody else writes it.
        const word_t cur = word.load(std::memory_order_relaxed);
        // [P6] release: the destructor happens-before the next claim's [P1] acquire.
        word.store(w::make(next_generation<GenBits>(w::gen(cur)), slot_state::free),
                   std::memory_order_release);
    }
};

}  // namespace lariv::detail
