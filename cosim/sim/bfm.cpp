// sparktile edge-stream bus-functional models (BFMs), shared by the cocotb benches and the
// plain C++ harness.
//
// The harness Verilog (cosim/harness.py) calls the DPI functions below once per edge port per
// clock edge: sources offer the next queued wavelet (holding it until the mesh takes it, as the
// Amaranth stream rules require), sinks take wavelets whenever their ready is high. Both sides
// insert seeded random pauses. Python fills the source queues and drains the sink queues through
// the extern "C" API at transaction boundaries only (ctypes on the simulator process, which is
// linked with -rdynamic), so the simulator never waits for Python inside a transaction.

#include <cstdint>
#include <cstdio>
#include <deque>
#include <random>
#include <string>
#include <vector>

#include <sys/stat.h>

#ifdef SPARKTILE_WAVES
// Traced builds only (cosim/build.py adds -CFLAGS -DSPARKTILE_WAVES): the dump that the
// harness's $dumpvars opens is owned by the model's symbol table, and Verilator ignores
// $dumpoff, so stopping a dump at the size limit means closing it there.
#include "Vtop__Syms.h"
#include "svdpi.h"
#endif

namespace {

struct Wave {
    uint32_t payload;
    uint8_t cc;        // color[4:0] | ctrl << 5
    uint64_t cycle;    // cycle it was taken (sources) or delivered (sinks)
};

struct Port {
    std::deque<Wave> src;          // waiting to be offered
    std::vector<uint64_t> taken;   // cycle each source wavelet was taken
    std::deque<Wave> sink;         // delivered, not yet read by the host
    double src_idle = 0.0;         // probability of pausing before offering the next wavelet
    double sink_stall = 0.0;       // probability of deasserting ready in a cycle
    bool offering = false;
};

struct State {
    std::vector<Port> ports;
    std::mt19937_64 rng{1};
    std::uniform_real_distribution<double> uni{0.0, 1.0};
    uint64_t cycle = 0;
    // Run control.
    uint64_t expect = 0;        // sink wavelets to wait for since arm
    uint64_t received = 0;      // sink wavelets since arm
    uint64_t deadline = 0;      // absolute cycle limit
    uint64_t idle_limit = 0;    // cycles without any transfer before declaring a hang
    uint64_t last_activity = 0;
    int status = 0;             // 0 running, 1 complete, 2 cycle limit, 3 idle (hang)
    bool armed = false;
    int wave_on = 0;
    // Totals for utilisation.
    uint64_t src_total = 0, sink_total = 0;
};

State g;

// The waveform size limit (--waves-limit). Kept apart from State, which sparktile_bfm_init
// resets: the dump is opened once per simulator process.
struct Waves {
    uint64_t limit = 0;          // bytes; 0 = no limit
    uint64_t stopped_cycle = 0;  // cycle the dump was closed at the limit; 0 = not stopped
    uint64_t stopped_bytes = 0;  // size of the file then
    std::string path;            // the file $dumpfile named
    void *syms = nullptr;        // Vtop__Syms* of the model (traced builds)
};

Waves w;

uint64_t file_size(const std::string &path) {
    struct stat st;
    return (!path.empty() && stat(path.c_str(), &st) == 0) ? (uint64_t)st.st_size : 0;
}

// Called every 128 cycles while a limited dump is open: close it once the file (as far as
// the trace writer has flushed it, which lags by its buffer) has reached the limit.
void check_wave_limit() {
#ifdef SPARKTILE_WAVES
    uint64_t size = file_size(w.path);
    if (size < w.limit) return;
    static_cast<Vtop__Syms *>(w.syms)->_traceDumpClose();
    w.syms = nullptr;
    w.stopped_cycle = g.cycle;
    w.stopped_bytes = file_size(w.path);
#endif
}

bool sources_empty() {
    for (auto &p : g.ports)
        if (!p.src.empty() || p.offering) return false;
    return true;
}

}  // namespace

extern "C" {

// ---- host API (ctypes) -------------------------------------------------------------------

void sparktile_bfm_init(int n_ports, uint64_t seed) {
    g = State();
    g.ports.resize(n_ports);
    g.rng.seed(seed);
}

int sparktile_bfm_ports() { return (int)g.ports.size(); }

void sparktile_src_push(int port, const uint32_t *payload, const uint8_t *cc, int n) {
    auto &p = g.ports.at(port);
    for (int i = 0; i < n; i++) p.src.push_back(Wave{payload[i], cc[i], 0});
}

void sparktile_set_pauses(int port, double src_idle, double sink_stall) {
    auto &p = g.ports.at(port);
    p.src_idle = src_idle;
    p.sink_stall = sink_stall;
}

int sparktile_sink_count(int port) { return (int)g.ports.at(port).sink.size(); }

int sparktile_sink_pop(int port, uint32_t *payload, uint8_t *cc, uint64_t *cycle, int max) {
    auto &p = g.ports.at(port);
    int n = 0;
    while (n < max && !p.sink.empty()) {
        payload[n] = p.sink.front().payload;
        cc[n] = p.sink.front().cc;
        cycle[n] = p.sink.front().cycle;
        p.sink.pop_front();
        n++;
    }
    return n;
}

int sparktile_src_taken_count(int port) { return (int)g.ports.at(port).taken.size(); }

int sparktile_src_taken_pop(int port, uint64_t *cycle, int max) {
    auto &p = g.ports.at(port);
    int n = 0;
    for (; n < max && n < (int)p.taken.size(); n++) cycle[n] = p.taken[n];
    p.taken.erase(p.taken.begin(), p.taken.begin() + n);
    return n;
}

int sparktile_src_pending(int port) {
    auto &p = g.ports.at(port);
    return (int)p.src.size() + (p.offering ? 1 : 0);
}

// Arm the completion detector: done when `expect` more sink wavelets have arrived and every
// source queue is empty; or after `max_cycles`; or after `idle_limit` cycles with no transfer
// on any edge while incomplete (a hang).
void sparktile_arm(uint64_t expect, uint64_t max_cycles, uint64_t idle_limit) {
    g.expect = expect;
    g.received = 0;
    g.deadline = g.cycle + max_cycles;
    g.idle_limit = idle_limit;
    g.last_activity = g.cycle;
    g.status = 0;
    g.armed = true;
}

int sparktile_status() { return g.status; }
uint64_t sparktile_cycle() { return g.cycle; }
uint64_t sparktile_src_total() { return g.src_total; }
uint64_t sparktile_sink_total() { return g.sink_total; }
void sparktile_wave_enable(int on) { g.wave_on = on; }
void sparktile_wave_limit(uint64_t bytes) { w.limit = bytes; }
uint64_t sparktile_wave_stopped_cycle() { return w.stopped_cycle; }
uint64_t sparktile_wave_stopped_bytes() { return w.stopped_bytes; }

// ---- DPI (called by the harness Verilog) --------------------------------------------------

// Offer the next wavelet of a source port. Called when the port holds nothing (or the held
// wavelet was just taken). Returns 1 and fills payload/cc when a wavelet is offered.
int st_src_next(int port, int *payload, int *cc) {
    auto &p = g.ports[port];
    p.offering = false;
    if (p.src.empty()) return 0;
    if (p.src_idle > 0.0 && g.uni(g.rng) < p.src_idle) return 0;
    *payload = (int)p.src.front().payload;
    *cc = p.src.front().cc;
    p.src.pop_front();
    p.offering = true;
    return 1;
}

// The mesh took the wavelet a source port was offering.
void st_src_taken(int port) {
    auto &p = g.ports[port];
    p.taken.push_back(g.cycle);
    p.offering = false;
    g.src_total++;
    g.last_activity = g.cycle;
}

int st_sink_ready(int port) {
    auto &p = g.ports[port];
    if (p.sink_stall > 0.0 && g.uni(g.rng) < p.sink_stall) return 0;
    return 1;
}

void st_sink_put(int port, int payload, int cc) {
    g.ports[port].sink.push_back(Wave{(uint32_t)payload, (uint8_t)cc, g.cycle});
    g.received++;
    g.sink_total++;
    g.last_activity = g.cycle;
}

// Once per clock: advance the cycle count and evaluate the completion detector. Returns 1 on
// the cycle the armed condition is met (the harness toggles `done` then).
int st_tick() {
    g.cycle++;
    if (w.syms && w.limit && (g.cycle & 127) == 0) check_wave_limit();
    if (!g.armed) return 0;
    if (g.received >= g.expect && sources_empty()) {
        g.status = 1;
    } else if (g.cycle >= g.deadline) {
        g.status = 2;
    } else if (g.idle_limit && g.cycle - g.last_activity > g.idle_limit) {
        g.status = 3;
    } else {
        return 0;
    }
    g.armed = false;
    return 1;
}

int st_wave_on() { return g.wave_on; }

#ifdef SPARKTILE_WAVES
// The harness calls this (a context import, so the scope is known) right after $dumpvars
// opened the dump: remember the model's symbol table, which owns the trace writer.
void st_wave_opened() {
    auto scope = static_cast<const VerilatedScope *>(svGetScope());
    w.syms = scope ? scope->symsp() : nullptr;
    w.path = Verilated::threadContextp()->dumpfile();
}
#endif

}  // extern "C"
