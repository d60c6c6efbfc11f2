static OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pmtu.bpf.o"));
fn main() {
    let mut ebpf = aya::Ebpf::load(OBJ).unwrap();
    for name in ["pmtu", "pmtu_pass", "pmtu_floor"] {
        let p: &mut aya::programs::Xdp = ebpf.program_mut(name).unwrap().try_into().unwrap();
        match p.load() { Ok(()) => println!("{name} loaded"), Err(e) => { println!("{name}: {e:?}"); } }
    }
}
