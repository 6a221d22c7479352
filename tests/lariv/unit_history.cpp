// The history checker must be able to fail (L8): feed it bad histories, one class at a time.
#include "history.hpp"

#include <doctest/doctest.h>

using namespace lariv::test;
using lariv::Index;

namespace {
event ev(op_kind k, Index h, std::uint64_t v, std::int64_t a, std::int64_t b, bool ok) {
    event e;
    e.kind = k;
    e.handle = h;
    e.value = v;
    e.t_inv = a;
    e.t_resp = b;
    e.ok = ok;
    return e;
}
history_result check(const std::vector<event>& es) {
    std::vector<const event*> ptrs;
    for (const auto& e : es) {
        ptrs.push_back(&e);
    }
    return check_history(ptrs);
}
const Index h1 = Index::make(0, 0, 1, 1);
const Index h2 = Index::make(0, 0, 1, 2);
}  // namespace

TEST_SUITE("unit") {
TEST_CASE("a correct concurrent history passes") {
    const auto r = check({ev(op_kind::push, h1, 10, 0, 1, true), ev(op_kind::get, h1, 10, 2, 5, true),
                          ev(op_kind::remove, h1, 0, 3, 4, true),  // overlaps the get: fine
                          ev(op_kind::get, h1, 0, 6, 7, false),    // after removal: fails, fine
                          ev(op_kind::take, h1, 0, 6, 8, false), ev(op_kind::push, h2, 20, 0, 1, true)});
    CHECK(r.v.total() == 0);
    CHECK(r.live.size() == 1);
    CHECK(r.live.at(h2) == 20);
    CHECK(r.stale_handle_ops == 2);
}
TEST_CASE("the checker catches each violation class") {
    SUBCASE("dup: two pushes returned one index") {
        CHECK(check({ev(op_kind::push, h1, 1, 0, 1, true), ev(op_kind::push, h1, 2, 2, 3, true)}).v.dup == 1);
    }
    SUBCASE("dup: removed twice") {
        CHECK(check({ev(op_kind::push, h1, 1, 0, 1, true), ev(op_kind::remove, h1, 0, 2, 3, true),
                     ev(op_kind::take, h1, 1, 4, 5, true)}).v.dup == 1);
    }
    SUBCASE("wrong value from take") {
        CHECK(check({ev(op_kind::push, h1, 1, 0, 1, true), ev(op_kind::take, h1, 9, 2, 3, true)}).v.wrong_value == 1);
    }
    SUBCASE("stale: get saw another element") {
        CHECK(check({ev(op_kind::push, h1, 1, 0, 1, true), ev(op_kind::get, h1, 9, 2, 3, true)}).v.stale == 1);
    }
    SUBCASE("late: get succeeded after the removal finished") {
        CHECK(check({ev(op_kind::push, h1, 1, 0, 1, true), ev(op_kind::remove, h1, 0, 2, 3, true),
                     ev(op_kind::get_mut, h1, 1, 4, 5, true)}).v.late == 1);
    }
    SUBCASE("lost: a failure with no removal to explain it") {
        CHECK(check({ev(op_kind::push, h1, 1, 0, 1, true), ev(op_kind::get, h1, 0, 2, 3, false)}).v.lost == 1);
        CHECK(check({ev(op_kind::push, h1, 1, 0, 1, true), ev(op_kind::get, h1, 0, 2, 3, false),
                     ev(op_kind::remove, h1, 0, 4, 5, true)}).v.lost == 1);  // removal came after
    }
    SUBCASE("orphan: an op on an index nobody pushed") {
        CHECK(check({ev(op_kind::get, h2, 0, 2, 3, false)}).v.orphan == 1);
    }
}
}
