use shuku_quants::QuantType;
use std::time::Instant;
fn main() {
    let (rows, n) = (576usize, 1536usize);
    let mut s = 0x1234_5678u64;
    let mut rnd = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    let x: Vec<f32> = (0..rows * n)
        .map(|_| {
            let u: f32 = (0..4).map(|_| rnd()).sum();
            (u - 2.0) * 0.03
        })
        .collect();
    let qw: Vec<f32> = (0..n)
        .map(|_| {
            let v = rnd() * 3.0;
            v * v + 0.01
        })
        .collect();
    let mb = (x.len() * 4) as f64 / 1e6;
    for ty in [
        QuantType::Q2_K,
        QuantType::Q3_K,
        QuantType::Q4_K,
        QuantType::Q5_K,
        QuantType::Q6_K,
    ] {
        let mut out = vec![0u8; ty.row_bytes(n).unwrap() * rows];
        for w in [None, Some(&qw[..])] {
            ty.quantize_into(&x, n, w, &mut out).unwrap();
            let reps = 15;
            let mut best = f64::MAX;
            for _ in 0..reps {
                let t = Instant::now();
                ty.quantize_into(&x, n, w, &mut out).unwrap();
                best = best.min(t.elapsed().as_secs_f64());
            }
            println!(
                "{ty} weighted={} {:.1} ms {:.1} MB/s",
                w.is_some(),
                best * 1e3,
                mb / best
            );
        }
    }
}
