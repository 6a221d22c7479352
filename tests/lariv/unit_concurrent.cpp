// Lariv, small deterministic concurrency contracts: what waits, what does not, who wins.
// None of these asserts a speed; each asserts an ordering that must hold on any machine.
#include "lariv/lariv.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
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
}
