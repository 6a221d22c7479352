// The deadline queue (server/detail/deadline_queue.hpp): one timer per execution context for the
// deadlines of every session on it. Order, moves, cancellation, the references it holds, its
// shutdown, and a concurrent stress whose books must balance (run under TSan and ASan in CI).
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>

#include "lariv/server/detail/deadline_queue.hpp"

namespace {

using lariv::server::detail::deadline_queue;
using lariv::server::detail::timed;
using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

/// Records when its deadline fired.
struct probe final : timed {
    explicit probe(int n) : id(n) {}
    int id;
    std::mutex mu;
    std::vector<clock_type::time_point> fired;
    std::atomic<int> fires{0};
    std::atomic<bool> wrong_self{false};  // the queue handed over another object's reference
    std::vector<int>* order = nullptr;  // appended to on the (single) io thread, if set

    void deadline_due(std::shared_ptr<timed> self) override {
        if (self.get() != static_cast<timed*>(this)) {
            wrong_self.store(true);
        }
        {
            std::lock_guard lk(mu);
            fired.push_back(clock_type::now());
        }
        if (order != nullptr) {
            order->push_back(id);
        }
        fires.fetch_add(1, std::memory_order_relaxed);
    }
};

/// Runs `io` until `pred` holds or 5 s pass.
template <class Pred>
bool run_until(asio::io_context& io, Pred pred) {
    const auto end = clock_type::now() + 5s;
    while (!pred() && clock_type::now() < end) {
        io.restart();
        io.run_for(5ms);
    }
    return pred();
}

/// The queue's timer is armed for `t`'s slot: at or after it, less than a resolution later.
bool armed_for_slot_of(const deadline_queue& q, clock_type::time_point t) {
    const auto a = q.armed_for();
    return a >= t && a < t + deadline_queue::resolution;
}

}  // namespace

TEST_SUITE("deadlines") {

TEST_CASE("deadline queue: fires each deadline once, in order, never early") {
    asio::io_context io;
    auto& q = deadline_queue::of(io.get_executor());
    std::vector<int> order;
    std::vector<std::shared_ptr<probe>> ps;
    std::vector<clock_type::time_point> due;
    const auto t0 = clock_type::now();
    const int offsets_ms[] = {90, 10, 50, 30, 70, 20, 80, 40, 60, 0};
    for (int i = 0; i < 10; ++i) {
        ps.push_back(std::make_shared<probe>(i));
        ps.back()->order = &order;
        due.push_back(t0 + std::chrono::milliseconds(offsets_ms[i]));
        q.schedule(ps.back(), due.back());
    }
    CHECK(q.size() == 10);
    CHECK(armed_for_slot_of(q, t0));  // the earliest
    REQUIRE(run_until(io, [&] { return order.size() == 10; }));
    // Deadlines 10 ms apart fire in due order, each at or after its due time.
    std::vector<int> want(10);
    for (int i = 0; i < 10; ++i) {
        want[static_cast<std::size_t>(offsets_ms[i] / 10)] = i;
    }
    CHECK(order == want);
    for (int i = 0; i < 10; ++i) {
        REQUIRE(ps[i]->fired.size() == 1);
        CHECK(ps[i]->fired[0] >= due[i]);
        CHECK(ps[i].use_count() == 1);  // the queue let go of it
    }
    CHECK(q.size() == 0);
    CHECK(q.armed_for() == clock_type::time_point::max());
    io.restart();
    io.run_for(30ms);
    for (auto& p : ps) {
        CHECK(p->fires.load() == 1);
    }
}

TEST_CASE("deadline queue: schedule moves a deadline, cancel removes it, references are exact") {
    asio::io_context io;
    auto& q = deadline_queue::of(io.get_executor());
    auto a = std::make_shared<probe>(1);
    auto b = std::make_shared<probe>(2);
    auto c = std::make_shared<probe>(3);
    const auto t0 = clock_type::now();
    q.schedule(a, t0 + 1h);
    q.schedule(b, t0 + 2h);
    q.schedule(c, t0 + 3h);
    CHECK(q.size() == 3);
    CHECK(a.use_count() == 2);  // one entry each, however often it is scheduled
    q.schedule(a, t0 + 4h);     // later
    q.schedule(c, t0 + 30ms);   // earlier: the timer follows
    CHECK(q.size() == 3);
    CHECK(a.use_count() == 2);
    CHECK(armed_for_slot_of(q, t0 + 30ms));
    q.cancel(*b);
    q.cancel(*b);  // twice: nothing
    CHECK(b.use_count() == 1);
    CHECK(q.size() == 2);
    REQUIRE(run_until(io, [&] { return c->fires.load() == 1; }));
    CHECK(a->fires.load() == 0);
    CHECK(b->fires.load() == 0);
    CHECK(q.size() == 1);
    CHECK(armed_for_slot_of(q, t0 + 4h));
    // Moved into the past: due at once.
    q.schedule(a, t0);
    REQUIRE(run_until(io, [&] { return a->fires.load() == 1; }));
    CHECK(q.size() == 0);
    CHECK(a.use_count() == 1);
    CHECK(c.use_count() == 1);
}

TEST_CASE("deadline queue: a scheduled object lives until its deadline, the context's end drops it unfired") {
    std::weak_ptr<probe> kept;
    std::weak_ptr<probe> dropped;
    {
        asio::io_context io;
        auto& q = deadline_queue::of(io.get_executor());
        CHECK(&q == &deadline_queue::of(io.get_executor()));  // one per context
        {
            auto p = std::make_shared<probe>(1);
            q.schedule(p, clock_type::now() + 20ms);
            kept = p;
            auto d = std::make_shared<probe>(2);
            q.schedule(d, clock_type::now() + 1h);
            dropped = d;
        }
        CHECK_FALSE(kept.expired());  // only the queue holds it now
        REQUIRE(run_until(io, [&] { return kept.expired(); }));  // fired, then released
        CHECK_FALSE(dropped.expired());
        // The context is destroyed with an entry an hour away: dropped, not fired, no leak.
    }
    CHECK(dropped.expired());
    // A stopped (not destroyed) context keeps its entries; cancel gives the reference back.
    asio::io_context io2;
    auto& q2 = deadline_queue::of(io2.get_executor());
    io2.stop();
    auto p = std::make_shared<probe>(3);
    q2.schedule(p, clock_type::now() + 1h);
    CHECK(q2.size() == 1);
    q2.cancel(*p);
    CHECK(p.use_count() == 1);
}

TEST_CASE("deadline queue: random moves and cancels keep the heap exact") {
    // One thread, a fixed seed: after every operation the queue's size is what a model says,
    // and at the end what fires is exactly what the model still holds, in due order.
    asio::io_context io;
    auto& q = deadline_queue::of(io.get_executor());
    std::mt19937 rng(12345);
    constexpr int n = 300;
    std::vector<std::shared_ptr<probe>> ps;
    std::vector<int> order;
    for (int i = 0; i < n; ++i) {
        ps.push_back(std::make_shared<probe>(i));
        ps.back()->order = &order;
    }
    const auto t0 = clock_type::now() + 50ms;  // nothing is due while the model runs
    std::vector<std::optional<clock_type::time_point>> model(n);
    for (int step = 0; step < 20000; ++step) {
        const auto i = static_cast<std::size_t>(rng() % n);
        if (rng() % 4 == 0) {
            q.cancel(*ps[i]);
            model[i].reset();
        } else {
            // Distinct due times (i breaks ties), so the firing order is defined.
            const auto due = t0 + std::chrono::microseconds((rng() % 1000) * n + i);
            q.schedule(ps[i], due);
            model[i] = due;
        }
        if (step % 97 == 0) {
            const auto live = std::count_if(model.begin(), model.end(), [](auto& m) { return m.has_value(); });
            REQUIRE(q.size() == static_cast<std::size_t>(live));
        }
    }
    std::vector<std::pair<clock_type::time_point, int>> want;
    for (int i = 0; i < n; ++i) {
        if (model[i]) {
            want.emplace_back(*model[i], i);
        }
        CHECK(ps[i].use_count() == (model[i] ? 2 : 1));
    }
    std::sort(want.begin(), want.end());
    REQUIRE(run_until(io, [&] { return order.size() == want.size(); }));
    for (std::size_t k = 0; k < want.size(); ++k) {
        CHECK(order[k] == want[k].second);
        CHECK(ps[static_cast<std::size_t>(want[k].second)]->fired.at(0) >= want[k].first);
    }
    for (auto& p : ps) {
        CHECK(p.use_count() == 1);
        CHECK(p->fires.load() <= 1);
    }
}

TEST_CASE("deadline queue: concurrent schedules, cancels and fires balance") {
    // Four threads move and cancel deadlines of their own objects (some due at once, some far
    // away) while two threads run the context. Invariants: nothing fires twice for one schedule
    // (fires <= schedules), everything due fires, and at the end no reference is left behind.
    asio::io_context io;
    auto work = asio::make_work_guard(io);
    auto& q = deadline_queue::of(io.get_executor());
    std::vector<std::thread> runners;
    for (int i = 0; i < 2; ++i) {
        runners.emplace_back([&] { io.run(); });
    }
    constexpr int per_thread = 64;
    constexpr int threads = 4;
    std::vector<std::shared_ptr<probe>> ps;
    for (int i = 0; i < threads * per_thread; ++i) {
        ps.push_back(std::make_shared<probe>(i));
    }
    std::atomic<long> schedules{0};
    std::vector<std::thread> movers;
    for (int t = 0; t < threads; ++t) {
        movers.emplace_back([&, t] {
            std::mt19937 rng(static_cast<unsigned>(t) + 1);
            for (int k = 0; k < 20000; ++k) {
                auto& p = ps[static_cast<std::size_t>(t * per_thread + static_cast<int>(rng() % per_thread))];
                switch (rng() % 3) {
                    case 0:
                        q.schedule(p, clock_type::now());  // due now: races the timer
                        schedules.fetch_add(1, std::memory_order_relaxed);
                        break;
                    case 1:
                        q.schedule(p, clock_type::now() + 1h);
                        schedules.fetch_add(1, std::memory_order_relaxed);
                        break;
                    default:
                        q.cancel(*p);
                        break;
                }
            }
        });
    }
    for (auto& m : movers) {
        m.join();
    }
    // Everything due now fires; the far ones are cancelled by hand.
    for (auto& p : ps) {
        q.schedule(p, clock_type::now());
    }
    const auto deadline = clock_type::now() + 5s;
    while (q.size() != 0 && clock_type::now() < deadline) {
        std::this_thread::sleep_for(1ms);
    }
    CHECK(q.size() == 0);
    work.reset();
    io.stop();
    for (auto& r : runners) {
        r.join();
    }
    long fires = 0;
    for (auto& p : ps) {
        CHECK(p.use_count() == 1);
        CHECK_FALSE(p->wrong_self.load());
        CHECK(p->fires.load() >= 1);  // the last schedule was due at once
        fires += p->fires.load();
    }
    CHECK(fires <= schedules.load() + static_cast<long>(ps.size()));
    MESSAGE("schedules " << schedules.load() << ", fires " << fires);
}

}  // TEST_SUITE
