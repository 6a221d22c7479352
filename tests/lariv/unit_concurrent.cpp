// Lariv, small deterministic concurrency contracts: what waits, what does not, who wins.
// None of these asserts a speed; each asserts an ordering that must hold on any machine.
#include "lariv/lariv.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <set>
#include <thread>
#include <vector>

#include "test_support.hpp"

using lariv::Index;
using lariv::Lariv;
using lariv::Options;
using namespace lariv::test;
using namespace std::chrono_literals;

TEST_SUITE("unit") {

// Threads use a Lariv from a thread_local destructor that runs after the thread handed its lane
// number back (the object was constructed before the thread's first use of any Lariv, so it is
// destroyed after the number's holder). Each such destructor overlaps with the next thread's body,
// which (numbers are recycled) gets that same number. Before the fix both threads then bumped one
// "owned" lane with plain load + store and lost increments: size() disagreed with the elements
// actually present, even once everything was joined.
namespace exit_order {
struct shared_state {
    Lariv<std::uint64_t>* l = nullptr;
    std::atomic<bool> started[64] = {};   // thread k's body has started pushing
    std::atomic<bool> in_dtor[64] = {};   // thread k is in its thread_local destructor
    int threads = 0;
    int per_thread = 0;
};
inline shared_state* g_state = nullptr;

struct churner {
    int k = -1;
    ~churner() {
        if (k < 0) {
            return;
        }
        shared_state& s = *g_state;
        s.in_dtor[k].store(true);
        // Overlap with the next thread's body (it has the number this thread just handed back).
        if (k + 1 < s.threads) {
            while (!s.started[k + 1].load()) {
                std::this_thread::yield();
            }
        }
        std::vector<Index> mine;
        mine.reserve(static_cast<std::size_t>(s.per_thread));
        for (int j = 0; j < s.per_thread; ++j) {
            mine.push_back(s.l->push(static_cast<std::uint64_t>(j)));
            if (j % 2 == 1) {
                (void)s.l->remove(mine[static_cast<std::size_t>(j - 1)]);
            }
        }
    }
};

inline void body(int k) {
    thread_local churner c;  // constructed before this thread's first use of a Lariv
    c.k = k;
    shared_state& s = *g_state;
    s.started[k].store(true);
    for (int j = 0; j < s.per_thread; ++j) {
        (void)s.l->push(static_cast<std::uint64_t>(j));
        if (j % 2 == 1) {
            // Some removes in the body too: a fresh index, removed right away.
            (void)s.l->remove(s.l->push(0));
        }
    }
}
}  // namespace exit_order

TEST_CASE("a Lariv used from thread_local destructors at thread exit keeps exact counts") {
    Lariv<std::uint64_t> l(Options{.buffer_capacity = 256});
    exit_order::shared_state s;
    s.l = &l;
    s.threads = 12;
    s.per_thread = 40000;
    exit_order::g_state = &s;
    (void)l.push(1);  // this thread holds a number too
    std::vector<std::thread> ts;
    for (int k = 0; k < s.threads; ++k) {
        ts.emplace_back(exit_order::body, k);
        // Start the next thread only once this one handed its number back and is in its
        // thread_local destructor, so the next one is given that number.
        while (!s.in_dtor[k].load()) {
            std::this_thread::yield();
        }
    }
    for (auto& t : ts) {
        t.join();
    }
    std::size_t present = 0;
    l.for_each([&](const Index&, const std::uint64_t&) { ++present; });
    // 1 + per thread: per_thread pushes in the body, per_thread - per_thread/2 in the destructor.
    const auto expected = static_cast<std::size_t>(
        1 + s.threads * (s.per_thread + s.per_thread - s.per_thread / 2));
    CHECK(present == expected);
    CHECK(l.size() == present);
    exit_order::g_state = nullptr;
}
TEST_CASE("remove does not wait for a guard held by another thread") {
    const auto alive0 = tracked_alive();
    Lariv<tracked> l(Options{.buffer_capacity = 2});
    const Index i = l.emplace(1);
    auto g = l.get(i);
    std::atomic<bool> removed{false};
    std::thread t([&] { removed.store(l.remove(i)); });
    t.join();  // returns although the guard is still held here
    CHECK(removed.load());
    CHECK(tracked_alive() == alive0 + 1);
    CHECK(g->checked() == 1);
    g.reset();
    CHECK(tracked_alive() == alive0);
}

TEST_CASE("take waits for guards already held, then returns the value") {
    Lariv<int> l(Options{.buffer_capacity = 2});
    const Index i = l.push(5);
    auto g = l.get(i);
    std::atomic<int> state{0};  // 1 = take started, 2 = take returned
    std::optional<int> got;
    std::thread t([&] {
        state.store(1);
        got = l.take(i);
        state.store(2);
    });
    while (state.load() == 0) {
        std::this_thread::yield();
    }
    std::this_thread::sleep_for(20ms);
    CHECK(state.load() == 1);  // cannot have returned: our guard is held
    CHECK_FALSE(l.get(i));     // but the element is already unreachable
    g.reset();
    t.join();
    CHECK(state.load() == 2);
    REQUIRE(got);
    CHECK(*got == 5);
}

TEST_CASE("get_mut is exclusive: it waits for readers, readers wait for it") {
    Lariv<int> l(Options{.buffer_capacity = 2});
    const Index i = l.push(0);
    auto r = l.get(i);
    std::atomic<int> state{0};
    std::thread t([&] {
        state.store(1);
        auto w = l.get_mut(i);
        state.store(2);
        *w = 1;
        std::this_thread::sleep_for(10ms);
        *w = 2;
    });
    while (state.load() == 0) {
        std::this_thread::yield();
    }
    std::this_thread::sleep_for(20ms);
    CHECK(state.load() == 1);
    r.reset();
    while (state.load() != 2) {
        std::this_thread::yield();
    }
    auto r2 = l.get(i);  // waits for the writer to finish
    CHECK(*r2 == 2);
    t.join();
}

TEST_CASE("of many threads removing one index, exactly one wins") {
    Lariv<int> l(Options{.buffer_capacity = 4});
    for (int round = 0; round < 300; ++round) {
        const Index i = l.push(round);
        std::atomic<int> wins{0};
        std::atomic<bool> go{false};
        std::vector<std::thread> ts;
        for (int k = 0; k < 4; ++k) {
            ts.emplace_back([&, k] {
                while (!go.load()) {
                }
                const bool w = (k % 2 == 0) ? l.remove(i) : l.take(i).has_value();
                wins.fetch_add(w ? 1 : 0);
            });
        }
        go.store(true);
        for (auto& t : ts) {
            t.join();
        }
        CHECK(wins.load() == 1);
    }
    CHECK(l.size() == 0);
}

TEST_CASE("concurrent growth links each buffer once and loses nothing") {
    Lariv<std::uint64_t> l(Options{.buffer_capacity = 1});
    constexpr int threads = 4;
    constexpr int per = 2000;
    std::vector<std::vector<Index>> got(threads);
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) {
        ts.emplace_back([&, t] {
            for (int k = 0; k < per; ++k) {
                got[static_cast<std::size_t>(t)].push_back(l.push(static_cast<std::uint64_t>(t * per + k)));
            }
        });
    }
    for (auto& t : ts) {
        t.join();
    }
    std::set<Index> all;
    for (int t = 0; t < threads; ++t) {
        for (int k = 0; k < per; ++k) {
            const Index x = got[static_cast<std::size_t>(t)][static_cast<std::size_t>(k)];
            all.insert(x);
            auto g = l.get(x);
            REQUIRE(g);
            CHECK(*g == static_cast<std::uint64_t>(t * per + k));
        }
    }
    CHECK(all.size() == threads * per);
    CHECK(l.size() == threads * per);
    CHECK(l.node_count() >= threads * per);
}

TEST_CASE("a pinned element keeps its address and value while others grow the container") {
    Lariv<std::uint64_t> l(Options{.buffer_capacity = 2});
    const Index i = l.push(12345);
    auto g = l.get(i);
    const std::uint64_t* p = g.get();
    std::vector<std::thread> ts;
    for (int t = 0; t < 3; ++t) {
        ts.emplace_back([&] {
            for (int k = 0; k < 3000; ++k) {
                (void)l.push(static_cast<std::uint64_t>(k));
            }
        });
    }
    for (auto& t : ts) {
        t.join();
    }
    CHECK(g.get() == p);
    CHECK(*g == 12345);
    CHECK(l.get(i).get() == p);
}

// Snapshot reads against churn of the same slots: every load returns nothing or a whole value that
// was stored at that very index (value = slot x generation, with its complement), never a torn
// copy or a newer element's value; and readers never wait for the writer. One buffer that may not
// grow, kept full but for the slot just freed, so each push reuses that slot at its next
// generation and the writer knows the index before it pushes.
TEST_CASE("load under churn of its own slots returns only whole values of that index") {
    struct pair64 {
        std::uint64_t v, not_v;
    };
    constexpr int n = 4;
    Lariv<pair64, lariv::SnapshotTraits> m(Options{.buffer_capacity = n, .max_buffers = 1});
    auto key = [](const Index& i) { return (std::uint64_t{i.slot()} << 32) | i.generation(); };
    std::array<std::atomic<std::uint64_t>, n> lo{}, hi{};  // the live index of each cell
    auto publish = [&](std::size_t k, const Index& i) {
        hi[k].store(i.hi, std::memory_order_relaxed);
        lo[k].store(i.lo, std::memory_order_release);
    };
    std::array<Index, n> first{};
    for (auto& i : first) {
        i = m.push(pair64{0, 0});
    }
    for (std::size_t k = 0; k < n; ++k) {  // replace each with a value that names its index
        REQUIRE(m.remove(first[k]));
        const std::uint64_t want = (std::uint64_t{first[k].slot()} << 32) | (first[k].generation() + 1);
        const Index i = m.push(pair64{want, ~want});
        REQUIRE(key(i) == want);
        publish(k, i);
    }
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> hits{0}, misses{0}, bad{0};
    std::vector<std::thread> readers;
    for (int r = 0; r < 2; ++r) {
        readers.emplace_back([&, r] {
            std::uint64_t h = 0, mi = 0;
            for (std::uint64_t it = 0; !stop.load(std::memory_order_relaxed); ++it) {
                const auto k = static_cast<std::size_t>((it + static_cast<std::uint64_t>(r)) % n);
                Index i;
                i.lo = lo[k].load(std::memory_order_acquire);
                i.hi = hi[k].load(std::memory_order_relaxed);
                if (const auto v = m.load(i)) {
                    ++h;
                    if (v->v != ~v->not_v || v->v != key(i)) {
                        bad.fetch_add(1);
                    }
                } else {
                    ++mi;
                }
                // The index before it on that slot was removed before i was published: must miss.
                Index older = i;
                older.lo -= std::uint64_t{1} << 32;
                if (m.load(older)) {
                    bad.fetch_add(1);
                }
            }
            hits.fetch_add(h);
            misses.fetch_add(mi);
        });
    }
    for (int round = 0; round < 50000; ++round) {
        const auto k = static_cast<std::size_t>(round % n);
        Index old;
        old.lo = lo[k].load(std::memory_order_relaxed);
        old.hi = hi[k].load(std::memory_order_relaxed);
        REQUIRE(m.remove(old));
        const std::uint64_t want = (std::uint64_t{old.slot()} << 32) | (old.generation() + 1);
        const Index i = m.push(pair64{want, ~want});
        REQUIRE(key(i) == want);
        publish(k, i);
    }
    stop.store(true);
    for (auto& t : readers) {
        t.join();
    }
    CHECK(bad.load() == 0);
    CHECK(hits.load() > 0);
    CHECK(m.size() == n);
    MESSAGE("loads: " << hits.load() << " hits, " << misses.load() << " misses");
}
}
