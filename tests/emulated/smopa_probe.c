/* Does the emulator compute SME's integer outer product right? Not part of the test suite: the evidence behind
 * README "INT8 and the CPU" (QEMU's -cpu max gives int8 garbage), kept so it can be rerun on a newer QEMU.
 *
 *   apt-get install gcc-aarch64-linux-gnu
 *   aarch64-linux-gnu-gcc -O1 -static -o /tmp/smopa tests/emulated/smopa_probe.c
 *   qemu-aarch64-static -cpu max /tmp/smopa          # QEMU 7.2: 48 of 64 elements wrong
 *
 * It loads one SVL-byte vector of random int8 into z0 and z1, runs SMOPA (4-way int8 products summed into the
 * 32-bit tile ZA0.S) twice, stores the tile row by row and compares with the same sums in C. Replacing the int8
 * loads and SMOPA with fp32 loads and FMOPA in the same harness gives 0 wrong elements, so the harness (tile
 * layout, stores) is right and the integer instruction is not.
 */
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
long smopa(const int8_t *a, const int8_t *b, int32_t *out);
__asm__(
".arch armv9-a+sme\n"
".global smopa\n"
"smopa:\n"
"  smstart\n"
"  rdsvl x9, #1\n"
"  ptrue p0.b\n"
"  ld1b {z0.b}, p0/z, [x0]\n"
"  ld1b {z1.b}, p0/z, [x1]\n"
"  zero {za}\n"
"  smopa za0.s, p0/m, p0/m, z0.b, z1.b\n"
"  smopa za0.s, p0/m, p0/m, z0.b, z1.b\n"   /* twice: accumulation too */
"  ptrue p1.s\n"
"  lsr x10, x9, #2\n"
"  mov w12, #0\n"
"1:\n"
"  st1w {za0h.s[w12, 0]}, p1, [x2]\n"
"  add x2, x2, x9\n"
"  add w12, w12, #1\n"
"  cmp x12, x10\n"
"  b.lt 1b\n"
"  smstop\n"
"  mov x0, x9\n"
"  ret\n");
int main(void) {
  int8_t a[256], b[256]; static int32_t out[64*64];
  srand(7);
  for (int i = 0; i < 256; i++) { a[i] = (int8_t)(rand() & 0xff); b[i] = (int8_t)(rand() & 0xff); }
  long svl = smopa(a, b, out);
  int n = (int)svl / 4, bad = 0;
  for (int i = 0; i < n; i++) for (int j = 0; j < n; j++) {
    int32_t r = 0; for (int k = 0; k < 4; k++) r += (int32_t)a[4*i+k] * b[4*j+k];
    if (out[i*n+j] != 2*r) { if (bad < 3) printf("ZA[%d][%d] = %d, expected %d\n", i, j, out[i*n+j], 2*r); bad++; }
  }
  printf("SVL %ld bytes: SMOPA (int8, 4-way, into int32) %d of %d elements wrong\n", svl, bad, n*n);
  return bad != 0;
}
