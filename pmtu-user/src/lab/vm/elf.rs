//! The little the VM REMOTE needs to know about ELF files: a vmlinux's PVH entry note (qemu
//! boots an uncompressed kernel only through it) and a program's interpreter and libraries (to
//! copy them into the guest, as `ldd` would find them).
use anyhow::{anyhow, bail, Result};
use object::{
    elf,
    read::elf::{ElfFile64, ProgramHeader as _},
    Endianness,
};

/// XEN_ELFNOTE_PHYS32_ENTRY: the 32-bit entry point a PVH loader (qemu's `-kernel`) jumps to.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// Whether `data` starts like an ELF file.
pub fn is_elf(data: &[u8]) -> bool {
    data.starts_with(b"\x7fELF")
}

fn parse(data: &[u8]) -> Result<ElfFile64<'_, Endianness>> {
    let file =
        ElfFile64::<Endianness>::parse(data).map_err(|e| anyhow!("not a 64-bit ELF file: {e}"))?;
    if file.elf_header().e_machine.get(file.endian()) != elf::EM_X86_64 {
        bail!("not an x86-64 ELF file");
    }
    Ok(file)
}

/// Whether the ELF file has a PVH entry note (a kernel built with CONFIG_PVH).
pub fn has_pvh_note(data: &[u8]) -> Result<bool> {
    let file = parse(data)?;
    let endian = file.endian();
    for ph in file.elf_program_headers() {
        let Some(mut notes) = ph
            .notes(endian, data)
            .map_err(|e| anyhow!("reading ELF notes: {e}"))?
        else {
            continue;
        };
        while let Some(note) = notes
            .next()
            .map_err(|e| anyhow!("reading ELF notes: {e}"))?
        {
            if note.name() == b"Xen" && note.n_type(endian) == XEN_ELFNOTE_PHYS32_ENTRY {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// What a dynamically linked program needs at run time.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// PT_INTERP: the dynamic loader's absolute path (none for a static program).
    pub interpreter: Option<String>,
    /// DT_NEEDED: library names (sonames) in the order given.
    pub libraries: Vec<String>,
    /// DT_RUNPATH / DT_RPATH directories.
    pub search: Vec<String>,
}

/// The interpreter and the libraries an ELF program or library asks for.
pub fn needs(data: &[u8]) -> Result<Needs> {
    let file = parse(data)?;
    let endian = file.endian();
    let mut out = Needs::default();
    for ph in file.elf_program_headers() {
        if let Some(interp) = ph
            .interpreter(endian, data)
            .map_err(|e| anyhow!("reading PT_INTERP: {e}"))?
        {
            out.interpreter = Some(String::from_utf8_lossy(interp).into_owned());
        }
    }
    let table = file
        .elf_dynamic_table()
        .map_err(|e| anyhow!("reading the dynamic section: {e}"))?;
    for d in table.iter() {
        let tag = d.tag;
        if tag != elf::DT_NEEDED && tag != elf::DT_RUNPATH && tag != elf::DT_RPATH {
            continue;
        }
        let text = String::from_utf8_lossy(
            table
                .string(d)
                .map_err(|e| anyhow!("reading a dynamic string: {e}"))?,
        )
        .into_owned();
        if tag == elf::DT_NEEDED {
            out.libraries.push(text);
        } else {
            out.search
                .extend(text.split(':').filter(|s| !s.is_empty()).map(String::from));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_program_needs_libc_and_the_loader() {
        // The test binary itself is a dynamically linked x86-64 program.
        let exe = std::env::current_exe().unwrap();
        let data = std::fs::read(exe).unwrap();
        assert!(is_elf(&data));
        let n = needs(&data).unwrap();
        assert!(
            n.interpreter
                .as_deref()
                .is_some_and(|i| i.contains("ld-linux")),
            "{n:?}"
        );
        assert!(
            n.libraries.iter().any(|l| l.starts_with("libc.so")),
            "{n:?}"
        );
        assert!(!has_pvh_note(&data).unwrap());
    }

    #[test]
    fn garbage_is_not_elf() {
        assert!(!is_elf(b"MZ\x90\x00"));
        assert!(needs(b"\x7fELF\x02\x01\x01 truncated").is_err());
    }
}
