// A consumer of the installed or vendored lariv::lariv target.
#include <lariv/lariv.hpp>

#include <cstdio>

int main() {
    lariv::Lariv<int> l(lariv::Options{.buffer_capacity = 4, .node_id = 9});
    const lariv::Index i = l.push(42);
    const auto back = lariv::Index::parse(i.to_string());
    if (!back || *back != i || *l.get(*back) != 42 || !l.remove(i) || l.get(i)) {
        std::puts("consumer: FAIL");
        return 1;
    }
    std::printf("consumer: ok %s\n", i.to_string().c_str());
    return 0;
}
