// Lariv, single-threaded behaviour and every edge (issue 2, section 3).
#include "lariv/lariv.hpp"

#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "test_support.hpp"

using lariv::Index;
using lariv::Lariv;
using lariv::Options;
using namespace lariv::test;

TEST_SUITE("unit") {
TEST_CASE("push, get, get_mut, remove and take do what they say") {
    Lariv<std::string> l(Options{.buffer_capacity = 8});
    const Index a = l.push("alpha");
    const Index b = l.emplace(3, 'b');
    CHECK(l.size() == 2);
    REQUIRE(l.get(a));
    CHECK(*l.get(a) == "alpha");
    CHECK(*l.get(b) == "bbb");
    {
        auto w = l.get_mut(a);
        REQUIRE(w);
        w->append("!");
    }
    CHECK(*l.get(a) == "alpha!");
    CHECK(l.contains(a));
    CHECK(l.remove(a));
    CHECK_FALSE(l.contains(a));
    CHECK_FALSE(l.get(a));
    CHECK_FALSE(l.get_mut(a));
    CHECK_FALSE(l.remove(a));
    CHECK_FALSE(l.take(a));
    auto t = l.take(b);
    REQUIRE(t);
    CHECK(*t == "bbb");
    CHECK_FALSE(l.take(b));
    CHECK(l.size() == 0);
    CHECK(l.empty());
}

TEST_CASE("indexes carry the node id and tag, and other nodes' indexes miss") {
    Lariv<int> l(Options{.buffer_capacity = 4, .node_id = 0xAB, .tag = 0xCD});
    const Index i = l.push(5);
    CHECK(i.node() == 0xAB);
    CHECK(i.tag() == 0xCD);
    CHECK(i.generation() >= 1);
    CHECK(l.get(i));
    CHECK_FALSE(l.get(Index::make(0xAC, 0xCD, i.generation(), i.slot())));  // other node
    CHECK_FALSE(l.get(Index::make(0xAB, 0xCE, i.generation(), i.slot())));  // other boot epoch
    CHECK_FALSE(l.get(Index::make(0xAB, 0xCD, 0, i.slot())));               // generation 0
    CHECK_FALSE(l.get(Index::make(0xAB, 0xCD, i.generation() + 1, i.slot())));
    CHECK_FALSE(l.get(Index::make(0xAB, 0xCD, i.generation(), 3)));          // free slot
    CHECK_FALSE(l.get(Index::make(0xAB, 0xCD, 1, 4)));                       // no such buffer
    CHECK_FALSE(l.get(Index::make(0xAB, 0xCD, 1, 0xFFFFFFFF)));              // far out of range
    CHECK_FALSE(l.remove(Index::make(0xAB, 0xCD, 1, 0xFFFFFFFF)));
    CHECK_FALSE(l.get(Index{}));
    CHECK(l.size() == 1);
}

TEST_CASE("a stale index never reaches the element that reused its slot") {
    Lariv<int> l(Options{.buffer_capacity = 1, .max_buffers = 1});
    const Index old = l.push(1);
    CHECK(l.remove(old));
    const Index now = l.push(2);
    CHECK(now.slot() == old.slot());  // the only slot was reused...
    CHECK(now.generation() != old.generation());  // ...under a new generation
    CHECK_FALSE(l.get(old));
    CHECK_FALSE(l.remove(old));
    CHECK_FALSE(l.take(old));
    CHECK(*l.get(now) == 2);
    // Many reuses of one slot: every old index stays dead.
    std::vector<Index> graveyard{old};
    Index cur = now;
    for (int i = 0; i < 1000; ++i) {
        CHECK(l.remove(cur));
        graveyard.push_back(cur);
        cur = l.push(i);
    }
    for (const Index& g : graveyard) {
        CHECK_FALSE(l.get(g));
    }
    CHECK(*l.get(cur) == 999);
}

TEST_CASE("status(): live, ended (removed or reused), never issued (foreign, out of range, ahead)") {
    using lariv::IndexStatus;
    Lariv<int> l(Options{.buffer_capacity = 2, .node_id = 3, .tag = 9});
    const Index a = l.push(1);
    CHECK(l.status(a) == IndexStatus::live);
    REQUIRE(l.remove(a));
    CHECK(l.status(a) == IndexStatus::ended);  // slot free, generation moved on
    Index b;
    do {
        b = l.push(2);
    } while (b.slot() != a.slot());
    CHECK(b.generation() > a.generation());
    CHECK(l.status(a) == IndexStatus::ended);  // slot reused by a newer generation
    CHECK(l.status(b) == IndexStatus::live);
    // A generation the slot has not reached: never issued (forged or corrupted).
    const Index ahead = Index::make(3, 9, b.generation() + 1, b.slot());
    CHECK(l.status(ahead) == IndexStatus::never_issued);
    // A free slot at its current generation: its next push will issue that index.
    const Index c = l.push(3);
    REQUIRE(l.remove(c));
    const Index next_of_c = Index::make(3, 9, c.generation() + 1, c.slot());
    CHECK(l.status(next_of_c) == IndexStatus::never_issued);
    // Foreign, null, out of range.
    CHECK(l.status(Index::make(4, 9, a.generation(), a.slot())) == IndexStatus::never_issued);
    CHECK(l.status(Index::make(3, 8, a.generation(), a.slot())) == IndexStatus::never_issued);
    CHECK(l.status(Index{}) == IndexStatus::never_issued);
    CHECK(l.status(Index::make(3, 9, 1, 1U << 30)) == IndexStatus::never_issued);
    CHECK(l.status(Index::make(3, 9, 0, a.slot())) == IndexStatus::never_issued);
}

TEST_CASE("buffer capacity 1 and 2 link a new buffer every few pushes") {
    for (std::size_t cap : {1U, 2U, 3U}) {
        Lariv<int> l(Options{.buffer_capacity = cap});
        std::vector<Index> idx;
        for (int i = 0; i < 500; ++i) {
            idx.push_back(l.push(i));
        }
        CHECK(l.size() == 500);
        CHECK(l.node_count() == (500 + cap - 1) / cap);
        CHECK(l.capacity() == l.node_count() * cap);
        CHECK(l.node_capacity() == cap);
        std::set<Index> unique(idx.begin(), idx.end());
        CHECK(unique.size() == 500);
        for (int i = 0; i < 500; ++i) {
            CHECK(*l.get(idx[static_cast<std::size_t>(i)]) == i);
        }
    }
}

TEST_CASE("growth across hundreds of buffers keeps every address stable") {
    Lariv<std::uint64_t> l(Options{.buffer_capacity = 3});
    std::vector<std::pair<Index, const std::uint64_t*>> seen;
    for (std::uint64_t i = 0; i < 3000; ++i) {  // 1000 buffers: crosses directory segments
        const Index x = l.push(i);
        seen.emplace_back(x, l.get(x).get());
    }
    CHECK(l.node_count() == 1000);
    for (std::size_t i = 0; i < seen.size(); ++i) {
        auto g = l.get(seen[i].first);
        REQUIRE(g);
        CHECK(g.get() == seen[i].second);
        CHECK(*g == i);
    }
}

TEST_CASE("the buffer cap is a clear failure, never a hang") {
    Lariv<int> l(Options{.buffer_capacity = 4, .max_buffers = 2});
    CHECK(l.max_node_count() == 2);
    std::vector<Index> idx;
    for (int i = 0; i < 8; ++i) {
        auto x = l.try_push(i);
        REQUIRE(x);
        idx.push_back(*x);
    }
    CHECK_FALSE(l.try_push(8));
    CHECK_THROWS_AS(l.push(8), lariv::capacity_error);
    CHECK(l.node_count() == 2);
    CHECK(l.size() == 8);
    CHECK(l.remove(idx[5]));
    auto again = l.try_push(9);
    REQUIRE(again);
    CHECK(again->slot() == idx[5].slot());
    CHECK(*l.get(*again) == 9);
}

TEST_CASE("freed slots are reused before new buffers are linked") {
    Lariv<int> l(Options{.buffer_capacity = 16});
    std::vector<Index> idx;
    for (int i = 0; i < 160; ++i) {
        idx.push_back(l.push(i));
    }
    const std::size_t buffers = l.node_count();
    CHECK(buffers == 10);
    for (int round = 0; round < 20; ++round) {
        for (auto& x : idx) {
            CHECK(l.remove(x));
        }
        for (std::size_t i = 0; i < idx.size(); ++i) {
            idx[i] = l.push(static_cast<int>(i));
        }
    }
    CHECK(l.node_count() == buffers);
    CHECK(l.size() == 160);
}

TEST_CASE("the growth policy is tunable") {
    // Ratio 1.0: every lap that freed less than the whole ring links a buffer.
    Lariv<int> eager(Options{.buffer_capacity = 4, .min_freed_ratio = 1.0, .claim_batch = 4});
    std::vector<Index> idx;
    for (int i = 0; i < 4; ++i) {
        idx.push_back(eager.push(i));
    }
    CHECK(eager.remove(idx[0]));
    (void)eager.push(9);  // end of lap: 1 of 4 freed < 100% -> grows instead of reusing
    CHECK(eager.node_count() == 2);
    // Ratio 0.0: a freed slot is always found before growing.
    Lariv<int> frugal(Options{.buffer_capacity = 4, .min_freed_ratio = 0.0, .claim_batch = 4});
    idx.clear();
    for (int i = 0; i < 4; ++i) {
        idx.push_back(frugal.push(i));
    }
    CHECK(frugal.remove(idx[2]));
    const Index r = frugal.push(9);
    CHECK(frugal.node_count() == 1);
    CHECK(r.slot() == idx[2].slot());
}

TEST_CASE("options are validated") {
    CHECK_THROWS_AS(Lariv<int>(Options{.buffer_capacity = (std::size_t{1} << 31) + 1}),
                    std::invalid_argument);
    // 0 = automatic: 1024 for small elements, ~512 KiB buffers for large ones.
    CHECK(Lariv<int>(Options{.buffer_capacity = 0}).node_capacity() == 1024);
    CHECK(Lariv<std::array<char, 4096>>().node_capacity() == 64);
    CHECK(Lariv<std::array<char, 1 << 20>>().node_capacity() == 16);
    CHECK_THROWS_AS(Lariv<int>(Options{.min_freed_ratio = 1.5}), std::invalid_argument);
    CHECK_THROWS_AS(Lariv<int>(Options{.min_freed_ratio = -0.1}), std::invalid_argument);
    Lariv<int> big(Options{.buffer_capacity = 1U << 20});
    CHECK(big.max_node_count() == 0xFFFFFFFFULL / (1U << 20));
}

TEST_CASE("a guard holds off destruction: the last guard destroys") {
    const auto alive0 = tracked_alive();
    {
        Lariv<tracked> l(Options{.buffer_capacity = 2});
        const Index i = l.emplace(7);
        auto r1 = l.get(i);
        auto r2 = l.get(i);
        REQUIRE(r1);
        CHECK(l.remove(i));  // does not wait for the guards
        CHECK_FALSE(l.get(i));
        CHECK_FALSE(l.remove(i));
        CHECK(tracked_alive() == alive0 + 1);  // still alive: guards are held
        CHECK(r1->checked() == 7);
        r1.reset();
        CHECK(tracked_alive() == alive0 + 1);
        r2.reset();  // the last guard destroys it
        CHECK(tracked_alive() == alive0);
        // The slot is free again under a new generation. Claim batches may hand out other free
        // slots first, so push until one lands in i's slot (bounded), then drop the others.
        Index j = l.emplace(8);
        std::vector<Index> others;
        for (int k = 0; k < 64 && j.slot() != i.slot(); ++k) {
            others.push_back(j);
            j = l.emplace(8);
        }
        REQUIRE(j.slot() == i.slot());
        CHECK(j.generation() != i.generation());
        CHECK_FALSE(l.get(i));  // the old index does not reach the new element
        for (const Index& o : others) {
            CHECK(l.remove(o));
        }
        auto w = l.get_mut(j);
        CHECK(l.remove(j));
        CHECK(tracked_alive() == alive0 + 1);
        w = {};
        CHECK(tracked_alive() == alive0);
    }
    CHECK(tracked_bad.load() == 0);
}

TEST_CASE("guards move, and a moved-from guard is empty") {
    Lariv<int> l;
    const Index i = l.push(1);
    auto a = l.get(i);
    auto b = std::move(a);
    CHECK_FALSE(a);  // NOLINT(bugprone-use-after-move): testing the moved-from state
    CHECK(b);
    decltype(b) c;
    c = std::move(b);
    CHECK(*c == 1);
    c.reset();
    CHECK(l.get_mut(i));  // no pin left behind
}

TEST_CASE("move-only, 4 KiB and throwing types work") {
    SUBCASE("move-only") {
        Lariv<std::unique_ptr<int>> l(Options{.buffer_capacity = 2});
        const Index i = l.push(std::make_unique<int>(41));
        **l.get_mut(i) += 1;
        auto p = l.take(i);
        REQUIRE(p);
        CHECK(**p == 42);
    }
    SUBCASE("4 KiB elements") {
        using page = std::array<std::uint64_t, 512>;
        Lariv<page> l(Options{.buffer_capacity = 4});
        std::vector<Index> idx;
        for (std::uint64_t k = 0; k < 40; ++k) {
            page p;
            p.fill(k);
            idx.push_back(l.push(p));
        }
        for (std::uint64_t k = 0; k < 40; ++k) {
            auto g = l.get(idx[k]);
            REQUIRE(g);
            CHECK((*g)[0] == k);
            CHECK((*g)[511] == k);
        }
    }
    SUBCASE("a throwing constructor frees its slot and leaks nothing") {
        struct thrower {
            explicit thrower(bool fail) : t(1) {
                if (fail) {
                    throw std::runtime_error("no");
                }
            }
            tracked t;
        };
        const auto alive0 = tracked_alive();
        Lariv<thrower> l(Options{.buffer_capacity = 1, .max_buffers = 1});
        CHECK_THROWS_AS(l.emplace(true), std::runtime_error);
        CHECK(l.size() == 0);
        CHECK(tracked_alive() == alive0);
        const Index ok = l.emplace(false);  // the only slot is free again
        CHECK(ok.slot() == 0);
        CHECK(l.size() == 1);
        CHECK(tracked_alive() == alive0 + 1);
    }
}

namespace {
/// Move-only; its move constructor throws while `fail_moves` is set, leaving its source intact
/// (the strong guarantee of its own). Carries a tracked member to count leaks.
struct throwing_move {
    static inline bool fail_moves = false;
    explicit throwing_move(std::uint64_t v) : t(v) {}
    throwing_move(throwing_move&& o) : t(o.t.checked()) {  // NOLINT: throws on purpose
        if (fail_moves) {
            throw std::runtime_error("move failed");
        }
    }
    throwing_move(const throwing_move&) = delete;
    throwing_move& operator=(const throwing_move&) = delete;
    throwing_move& operator=(throwing_move&&) = delete;
    ~throwing_move() = default;
    tracked t;
};
}  // namespace

TEST_CASE("take gives the strong guarantee when the move constructor throws") {
    const auto alive0 = tracked_alive();
    const auto bad0 = tracked_bad.load();
    {
        Lariv<throwing_move> l(Options{.buffer_capacity = 4});
        const Index i = l.emplace(77);
        const Index other = l.emplace(5);
        CHECK(l.size() == 2);
        throwing_move::fail_moves = true;
        CHECK_THROWS_AS((void)l.take(i), std::runtime_error);
        throwing_move::fail_moves = false;
        // Still there, at the same index, with its value; the failed take counted no removal.
        CHECK(l.contains(i));
        CHECK(l.size() == 2);
        {
            auto g = l.get(i);
            REQUIRE(g);
            CHECK(g->t.checked() == 77);
        }
        {
            auto w = l.get_mut(i);  // no pin was left behind: an exclusive guard is free
            CHECK(w);
        }
        CHECK(tracked_alive() == alive0 + 2);
        int visited = 0;
        l.for_each([&](const Index& x, const throwing_move& v) {
            ++visited;
            CHECK((x == i ? v.t.checked() == 77 : v.t.checked() == 5));
        });
        CHECK(visited == 2);
        // Fails again, then succeeds.
        throwing_move::fail_moves = true;
        CHECK_THROWS_AS((void)l.take(i), std::runtime_error);
        throwing_move::fail_moves = false;
        auto got = l.take(i);
        REQUIRE(got);
        CHECK(got->t.checked() == 77);
        CHECK_FALSE(l.contains(i));
        CHECK_FALSE(l.take(i));
        CHECK(l.size() == 1);
        CHECK(tracked_alive() == alive0 + 2);  // `got` and `other`; the moved-from one is gone
        got.reset();
        CHECK(tracked_alive() == alive0 + 1);
        // The slot is reused as usual afterwards.
        CHECK(l.remove(other));
        CHECK(l.size() == 0);
        CHECK(tracked_alive() == alive0);
        (void)l.emplace(9);
    }
    CHECK(tracked_alive() == alive0);
    CHECK(tracked_bad.load() == bad0);
}

TEST_CASE("a take that throws hides the element only while it runs") {
    Lariv<throwing_move> l(Options{.buffer_capacity = 4});
    const Index i = l.emplace(3);
    auto g = l.get(i);  // the take waits for this guard
    throwing_move::fail_moves = true;
    std::atomic<int> state{0};  // 1 = take started, 2 = take threw
    std::thread t([&] {
        state.store(1);
        try {
            (void)l.take(i);
        } catch (const std::runtime_error&) {
            state.store(2);
        }
    });
    while (state.load() == 0) {
        std::this_thread::yield();
    }
    while (l.contains(i)) {  // the take has won the kill: the element is unreachable...
        std::this_thread::yield();
    }
    CHECK_FALSE(l.remove(i));  // ...so a concurrent remove misses (documented)
    g.reset();                 // the take proceeds, its move throws, the element is put back
    t.join();
    throwing_move::fail_moves = false;
    CHECK(state.load() == 2);
    CHECK(l.contains(i));
    {
        auto back = l.get(i);
        REQUIRE(back);
        CHECK(back->t.checked() == 3);
    }
    CHECK(l.size() == 1);
    CHECK(l.remove(i));
    CHECK(l.size() == 0);
}

TEST_CASE("the destructor destroys live elements and frees every buffer") {
    const auto bytes0 = allocated_bytes.load();
    const auto alive0 = tracked_alive();
    {
        Lariv<tracked, lariv::DefaultTraits, counting_allocator<tracked>> l(Options{.buffer_capacity = 5});
        std::vector<Index> idx;
        for (int i = 0; i < 1000; ++i) {
            idx.push_back(l.emplace(static_cast<std::uint64_t>(i)));
        }
        for (std::size_t i = 0; i < idx.size(); i += 3) {
            CHECK(l.remove(idx[i]));
        }
        auto t = l.take(idx[1]);
        CHECK(allocated_bytes.load() > bytes0);
        CHECK(tracked_alive() == alive0 + 1000 - 334);  // 666 live + the taken one - 1 taken
    }
    CHECK(tracked_alive() == alive0);
    CHECK(allocated_bytes.load() == bytes0);
    CHECK(tracked_bad.load() == 0);
}

TEST_CASE("for_each visits live elements in slot order and can stop") {
    Lariv<int> l(Options{.buffer_capacity = 4});
    std::vector<Index> idx;
    for (int i = 0; i < 20; ++i) {
        idx.push_back(l.push(i));
    }
    for (int i = 0; i < 20; i += 2) {
        CHECK(l.remove(idx[static_cast<std::size_t>(i)]));
    }
    std::vector<int> got;
    l.for_each([&](const Index& x, const int& v) {
        CHECK(x == idx[static_cast<std::size_t>(v)]);
        got.push_back(v);
    });
    CHECK(got == std::vector<int>{1, 3, 5, 7, 9, 11, 13, 15, 17, 19});
    got.clear();
    l.for_each([&](const Index&, const int& v) {
        got.push_back(v);
        return got.size() < 3;
    });
    CHECK(got == std::vector<int>{1, 3, 5});
    got.clear();
    l.for_each([&](const Index&, const int& v) { got.push_back(v); }, idx[10].slot());
    CHECK(got.front() == 11);
    CHECK(got.size() == 5);
}

// Snapshot reads (Traits::snapshot_reads): load() copies a live value, never a removed or newer
// one, for inline and separate layouts and sizes that are not multiples of 8.
struct rec12 {
    std::uint32_t a, b, c;
};
struct rec100 {
    std::array<std::uint8_t, 100> b;
};
struct rec4k {
    std::uint64_t head;
    std::array<std::uint64_t, 510> mid;
    std::uint64_t tail;
};
template <class T>
concept has_get_mut = requires(T& l, Index i) { l.get_mut(i); };
template <class T>
concept has_load = requires(const T& l, Index i) { l.load(i); };
static_assert(!has_get_mut<Lariv<std::uint64_t, lariv::SnapshotTraits>>);
static_assert(has_load<Lariv<std::uint64_t, lariv::SnapshotTraits>>);
static_assert(has_get_mut<Lariv<std::uint64_t>> && !has_load<Lariv<std::uint64_t>>);

TEST_CASE("load copies the live value and misses removed, stale and foreign indexes") {
    // One full buffer that may not grow: the push after a remove reuses that slot.
    Lariv<std::uint64_t, lariv::SnapshotTraits> l(
        Options{.buffer_capacity = 4, .max_buffers = 1, .node_id = 3});
    const Index a = l.push(11);
    const Index b = l.push(22);
    const Index c = l.push(33);
    (void)l.push(0);
    CHECK(l.load(a) == std::optional<std::uint64_t>(11));
    CHECK(l.load(b) == std::optional<std::uint64_t>(22));
    CHECK(l.load(c) == std::optional<std::uint64_t>(33));
    CHECK(*l.get(c) == 33);  // guards work alongside
    CHECK(l.remove(a));
    CHECK_FALSE(l.load(a));
    const Index a2 = l.push(44);  // reuses a's slot with the next generation
    REQUIRE(a2.slot() == a.slot());
    CHECK(a2.generation() != a.generation());
    CHECK_FALSE(l.load(a));  // the stale index never reaches the newer element
    CHECK(l.load(a2) == std::optional<std::uint64_t>(44));
    CHECK(l.take(b) == std::optional<std::uint64_t>(22));
    CHECK_FALSE(l.load(b));
    CHECK_FALSE(l.load(Index{}));
    CHECK_FALSE(l.load(Index::make(9, 0, c.generation(), c.slot())));  // another node's id
    CHECK_FALSE(l.load(Index::make(3, 0, c.generation(), 1000)));     // out of range
    {
        auto g = l.get(c);  // a held guard does not stop a load or a remove
        CHECK(l.load(c) == std::optional<std::uint64_t>(33));
        CHECK(l.remove(c));
        CHECK_FALSE(l.load(c));
        CHECK(*g == 33);
    }
    CHECK(l.size() == 2);
}

TEST_CASE("load returns whole values of every size and layout") {
    Lariv<rec12, lariv::SnapshotTraits> s12(Options{.buffer_capacity = 4});
    const Index i12 = s12.push(rec12{1, 2, 3});
    const auto v12 = s12.load(i12);
    REQUIRE(v12);
    CHECK((v12->a == 1 && v12->b == 2 && v12->c == 3));

    Lariv<rec100, lariv::SnapshotTraits> s100(Options{.buffer_capacity = 4});  // separate, 4-byte chunks
    rec100 r{};
    for (std::size_t k = 0; k < r.b.size(); ++k) {
        r.b[k] = static_cast<std::uint8_t>(k * 7);
    }
    std::vector<Index> ids;
    for (int k = 0; k < 6; ++k) {
        r.b[0] = static_cast<std::uint8_t>(k);
        ids.push_back(s100.push(r));
    }
    for (int k = 0; k < 6; ++k) {
        const auto v = s100.load(ids[static_cast<std::size_t>(k)]);
        REQUIRE(v);
        CHECK(v->b[0] == k);
        CHECK(v->b[99] == static_cast<std::uint8_t>(99 * 7));
    }

    Lariv<rec4k, lariv::SnapshotTraits> big(Options{.buffer_capacity = 2});
    rec4k x{};
    x.head = 5;
    x.tail = ~std::uint64_t{5};
    x.mid[509] = 77;
    const Index ib = big.push(x);
    const auto vb = big.load(ib);
    REQUIRE(vb);
    CHECK((vb->head == 5 && vb->tail == ~std::uint64_t{5} && vb->mid[509] == 77));
}
}
