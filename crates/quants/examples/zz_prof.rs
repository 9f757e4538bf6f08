use shuku_quants::QuantType;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ty: QuantType = args[1].parse().unwrap();
    let weighted = args[2] == "1";
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
    let mut out = vec![0u8; ty.row_bytes(n).unwrap() * rows];
    for _ in 0..20 {
        ty.quantize_into(&x, n, weighted.then_some(&qw[..]), &mut out)
            .unwrap();
    }
}
