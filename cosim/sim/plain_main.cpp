// The plain Verilator C++ harness: the same harness and BFMs as the cocotb benches, driven by
// a C++ main with no Python and no VPI, replaying a transaction file that a cocotb run recorded
// (Fabric.record). It is the simulator's speed limit for that workload; sparktile reports the
// cocotb run's cycles/s as a ratio against it.
//
// Replay file: repeated phases of
//   u32 n_sends; n_sends x { u32 port, u32 n, n x u32 payload, n x u8 cc }; u64 expect
// Output (stdout, one line of JSON): phases, cycles, wall seconds, cycles per second.

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <vector>

#include "Vtop.h"
#include "verilated.h"

extern "C" {
void sparktile_bfm_init(int n_ports, uint64_t seed);
void sparktile_src_push(int port, const uint32_t *payload, const uint8_t *cc, int n);
int sparktile_sink_count(int port);
int sparktile_sink_pop(int port, uint32_t *payload, uint8_t *cc, uint64_t *cycle, int max);
int sparktile_src_taken_pop(int port, uint64_t *cycle, int max);
int sparktile_src_taken_count(int port);
void sparktile_arm(uint64_t expect, uint64_t max_cycles, uint64_t idle_limit);
int sparktile_status();
uint64_t sparktile_cycle();
}

template <typename T> static bool rd(std::ifstream &f, T &v) {
    return (bool)f.read(reinterpret_cast<char *>(&v), sizeof(T));
}

int main(int argc, char **argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s REPLAY_FILE N_PORTS\n", argv[0]);
        return 2;
    }
    std::ifstream f(argv[1], std::ios::binary);
    if (!f) {
        std::fprintf(stderr, "error: cannot open replay file %s\n", argv[1]);
        return 2;
    }
    int n_ports = std::atoi(argv[2]);
    auto ctx = std::make_unique<VerilatedContext>();
    ctx->commandArgs(argc, argv);
    auto top = std::make_unique<Vtop>(ctx.get(), "");
    sparktile_bfm_init(n_ports, 1);
    std::vector<uint32_t> pay;
    std::vector<uint8_t> cc;
    std::vector<uint64_t> cyc;
    uint64_t phases = 0, start_cycle = 0;
    bool started = false;
    double wall = 0.0;
    uint32_t n_sends;
    while (rd(f, n_sends)) {
        for (uint32_t s = 0; s < n_sends; s++) {
            uint32_t port, n;
            rd(f, port);
            rd(f, n);
            pay.resize(n);
            cc.resize(n);
            f.read(reinterpret_cast<char *>(pay.data()), 4 * (std::streamsize)n);
            f.read(reinterpret_cast<char *>(cc.data()), n);
            sparktile_src_push((int)port, pay.data(), cc.data(), (int)n);
        }
        uint64_t expect;
        rd(f, expect);
        if (!started) {
            start_cycle = sparktile_cycle();
            started = true;
        }
        sparktile_arm(expect, 1ull << 40, 1000000);
        auto t0 = std::chrono::steady_clock::now();
        uint8_t done0 = top->done;
        while (!ctx->gotFinish()) {
            top->eval();
            if (top->done != done0) break;
            if (!top->eventsPending()) break;
            ctx->time(top->nextTimeSlot());
        }
        wall += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (sparktile_status() != 1) {
            std::fprintf(stderr, "error: replay phase %llu did not complete (status %d)\n",
                         (unsigned long long)phases, sparktile_status());
            return 1;
        }
        for (int p = 0; p < n_ports; p++) {  // drain, as the host does
            int k = sparktile_sink_count(p);
            pay.resize(k + 1);
            cc.resize(k + 1);
            cyc.resize(k + 1);
            sparktile_sink_pop(p, pay.data(), cc.data(), cyc.data(), k);
            k = sparktile_src_taken_count(p);
            cyc.resize(k + 1);
            sparktile_src_taken_pop(p, cyc.data(), k);
        }
        phases++;
    }
    uint64_t cycles = sparktile_cycle() - start_cycle;
    std::printf("{\"phases\": %llu, \"cycles\": %llu, \"wall_s\": %.6f, \"cycles_per_s\": %.1f}\n",
                (unsigned long long)phases, (unsigned long long)cycles, wall,
                wall > 0 ? cycles / wall : 0.0);
    top->final();
    return 0;
}
