// Corpus replay for the libFuzzer entry point, for builds without libFuzzer (RELIABILITY.md S1):
// runs every file named on the command line, or found under a named directory, through
// LLVMFuzzerTestOneInput. A failed check aborts inside the entry point.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

bool run_file(const std::filesystem::path& p) {
    std::ifstream f(p, std::ios::binary);
    if (!f) {
        std::fprintf(stderr, "cannot read %s\n", p.c_str());
        return false;
    }
    const std::vector<char> bytes{std::istreambuf_iterator<char>(f),
                                  std::istreambuf_iterator<char>()};
    LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    std::size_t files = 0;
    bool ok = true;
    for (int i = 1; i < argc; ++i) {
        const std::filesystem::path arg(argv[i]);
        if (std::filesystem::is_directory(arg)) {
            for (const auto& e : std::filesystem::recursive_directory_iterator(arg)) {
                if (e.is_regular_file()) {
                    ok = run_file(e.path()) && ok;
                    ++files;
                }
            }
        } else {
            ok = run_file(arg) && ok;
            ++files;
        }
    }
    std::printf("replayed %zu inputs\n", files);
    if (files == 0) {
        std::fprintf(stderr, "no corpus files given\n");
        return 1;
    }
    return ok ? 0 : 1;
}
