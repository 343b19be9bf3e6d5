// The virtual board: the FPGA top (mesh + bridge + UART) Verilated, with a bit-level UART
// model on its pins, talking to the host over stdin (bytes to the board) and stdout (bytes
// from the board). The host sees exactly the byte stream a USB-UART would carry; the model
// serializes every byte onto uart_rx (start, 8 data LSB first, stop; `divisor` clocks per bit)
// and deserializes uart_tx by sampling the middle of each bit.
//
// The simulation runs freely while anything happens on the link and for IDLE_LIMIT cycles
// after (the mesh computes between host requests), then blocks on stdin until the host sends
// more, so an idle virtual board costs no CPU. EOF on stdin ends it.
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <poll.h>
#include <unistd.h>

#include "Vsparktile_fpga.h"
#include "verilated.h"

static const uint64_t IDLE_LIMIT = 1u << 18;

int main(int argc, char** argv) {
    Verilated::commandArgs(argc, argv);
    int divisor = 4;
    if (const char* d = getenv("SPARKTILE_UART_DIVISOR")) divisor = atoi(d);
    if (divisor < 4) { fprintf(stderr, "vboard: divisor must be >= 4\n"); return 2; }
    Vsparktile_fpga* top = new Vsparktile_fpga;
    top->clk = 0; top->rst = 1; top->uart_rx = 1;
    for (int i = 0; i < 8; ++i) { top->clk = !top->clk; top->eval(); }
    top->rst = 0;

    std::deque<uint8_t> to_board;
    // Transmitter onto uart_rx.
    int rx_bit = -1, rx_cnt = 0; uint16_t rx_frame = 0;
    // Receiver from uart_tx.
    int tx_bit = -1, tx_cnt = 0; uint8_t tx_byte = 0;
    uint64_t idle = 0, cycle = 0;
    bool eof = false;
    uint8_t buf[65536];

    for (;;) {
        bool busy = !to_board.empty() || rx_bit >= 0 || tx_bit >= 0 || !top->uart_tx;
        if (busy) idle = 0; else ++idle;
        if ((cycle & 63) == 0 || idle > IDLE_LIMIT) {
            if (eof && idle > IDLE_LIMIT) break;
            struct pollfd p = {0, POLLIN, 0};
            int timeout = (idle > IDLE_LIMIT) ? -1 : 0;
            int r = eof ? 0 : poll(&p, 1, timeout);
            if (r > 0) {
                ssize_t n = read(0, buf, sizeof buf);
                if (n > 0) { to_board.insert(to_board.end(), buf, buf + n); idle = 0; }
                else if (n == 0) eof = true;
                else if (errno != EINTR && errno != EAGAIN) eof = true;
            }
        }
        // Drive uart_rx.
        if (rx_bit < 0 && !to_board.empty()) {
            rx_frame = (uint16_t)(0x200 | (to_board.front() << 1));  // stop, data, start
            to_board.pop_front();
            rx_bit = 0; rx_cnt = 0;
        }
        if (rx_bit >= 0) {
            top->uart_rx = (rx_frame >> rx_bit) & 1;
            if (++rx_cnt == divisor) { rx_cnt = 0; if (++rx_bit == 10) rx_bit = -1; }
        } else {
            top->uart_rx = 1;
        }
        top->clk = 1; top->eval();
        top->clk = 0; top->eval();
        ++cycle;
        // Sample uart_tx in the middle of each bit.
        if (tx_bit < 0) {
            if (!top->uart_tx) { tx_bit = 0; tx_cnt = divisor / 2; tx_byte = 0; }
        } else if (--tx_cnt == 0) {
            tx_cnt = divisor;
            if (tx_bit == 0) {
                if (top->uart_tx) tx_bit = -1;               // glitch, not a start bit
                else tx_bit = 1;
            } else if (tx_bit <= 8) {
                tx_byte |= (uint8_t)(top->uart_tx << (tx_bit - 1));
                ++tx_bit;
            } else {                                        // stop bit
                if (top->uart_tx) {
                    ssize_t w;
                    do { w = write(1, &tx_byte, 1); } while (w < 0 && errno == EINTR);
                    if (w < 0) break;                       // host went away
                }
                tx_bit = -1;
            }
        }
    }
    top->final();
    delete top;
    return 0;
}
