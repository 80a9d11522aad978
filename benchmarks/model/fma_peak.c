/* Floating-point ceiling of this CPU: every thread runs independent chains of fused
 * multiply-adds on the widest vectors the compiler targets (-march=native), nothing else.
 * Prints multiply-accumulates per second over all threads (best of 5 runs).
 * Built and run by benchmarks/model/peak.py; a figure, not a test. */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#if defined(__AVX512F__)
typedef __m512 vec;
#define LANES 16
#define SET1 _mm512_set1_ps
#define FMA _mm512_fmadd_ps
#define STORE _mm512_storeu_ps
#elif defined(__FMA__)
typedef __m256 vec;
#define LANES 8
#define SET1 _mm256_set1_ps
#define FMA _mm256_fmadd_ps
#define STORE _mm256_storeu_ps
#else
#error "needs a CPU with FMA instructions"
#endif

#define CHAINS 12 /* more independent chains than FMA latency x FMA ports on current x86 */

int main(int argc, char **argv) {
    long iters = argc > 1 ? atol(argv[1]) : 50000000L;
    double best = 1e30, sink = 0;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = omp_get_wtime();
#pragma omp parallel reduction(+ : sink)
        {
            vec acc[CHAINS];
            vec b = SET1(0.9999999f), c = SET1(1e-7f);
            for (int i = 0; i < CHAINS; i++) acc[i] = SET1((float)i);
            for (long n = 0; n < iters; n++)
                for (int i = 0; i < CHAINS; i++) acc[i] = FMA(acc[i], b, c);
            float out[LANES];
            for (int i = 0; i < CHAINS; i++) {
                STORE(out, acc[i]);
                sink += out[0];
            }
        }
        double dt = omp_get_wtime() - t0;
        if (dt < best) best = dt;
    }
    int threads = omp_get_max_threads();
    printf("%d %d %.3f %g\n", threads, LANES, threads * (double)iters * CHAINS * LANES / best / 1e9,
           sink);
    return 0;
}
