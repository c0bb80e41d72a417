//! Start-up runs code that serving never runs again: YAML and JSON parsing of the
//! configuration, provider discovery, certificate generation, the TLS set-up. Its pages stay
//! mapped, and counted in RSS, for the life of the process: an outpost just started showed
//! 5.8 MiB, 1.4 MiB once they were released (`bench/run.sh`, `outpost_rss_idle`).
//!
//! `release` drops the mapping of the binary's read-only segments (code, constants, unwind
//! tables): the kernel maps back, from the page cache, the pages serving touches, so RSS
//! becomes the working set. Writable segments (data, and the pointers relocated at start-up,
//! which sit in the writable segment's RELRO part) are never touched, and Rust's linkers emit
//! no text relocations, so nothing but page-table entries is lost. Part of the binary, not
//! the library (which forbids `unsafe`).

/// `PF_W` of the ELF specification (not exported by `libc`).
const PF_W: u32 = 2;

/// Bytes of the executable's read-only, page-aligned segments advised away; 0 if none.
pub fn release() -> usize {
    let mut segments: Vec<(usize, usize)> = Vec::new();
    // SAFETY: `collect` only reads the program headers that dl_iterate_phdr hands it and
    // writes to the Vec passed as `data`, which outlives the call.
    unsafe {
        libc::dl_iterate_phdr(Some(collect), (&raw mut segments).cast());
    }
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let mut released = 0;
    for (start, len) in segments {
        let first = start.div_ceil(page) * page;
        let end = (start + len) / page * page;
        if end <= first {
            continue;
        }
        // SAFETY: [first, end) lies within a PT_LOAD segment of this executable that has no
        // write permission: a private file mapping no one has written to, whose pages
        // MADV_DONTNEED lets the kernel map again from the file, unchanged, on next access.
        let addr = first as *mut libc::c_void;
        if unsafe { libc::madvise(addr, end - first, libc::MADV_DONTNEED) } == 0 {
            released += end - first;
        }
    }
    released
}

/// dl_iterate_phdr's callback: the first object reported is the executable; its loadable
/// segments without write permission go into `data` as (address, length). Returns 1 to
/// stop after it.
unsafe extern "C" fn collect(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: dl_iterate_phdr passes a valid info for the duration of the call, whose
    // dlpi_phdr points to dlpi_phnum headers; `data` is the Vec of `release`.
    let (info, out) = unsafe { (&*info, &mut *data.cast::<Vec<(usize, usize)>>()) };
    if info.dlpi_phdr.is_null() {
        return 1;
    }
    // SAFETY: as above.
    let headers =
        unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
    for h in headers {
        if h.p_type == libc::PT_LOAD && h.p_flags & PF_W == 0 {
            out.push((
                info.dlpi_addr as usize + h.p_vaddr as usize,
                h.p_memsz as usize,
            ));
        }
    }
    1
}

#[cfg(test)]
mod tests {
    fn rss_file_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("RssFile:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn releases_the_read_only_pages_and_the_program_keeps_running() {
        let before = rss_file_kib();
        let released = super::release();
        let after = rss_file_kib();
        assert!(released > 0, "no read-only segment found");
        assert!(after < before, "RssFile {before} kB -> {after} kB");
        // Code, constants and formatting still work: pages come back from the file.
        let text = format!("{:?}", (1..5).map(|i| i * 3).collect::<Vec<_>>());
        assert_eq!(text, "[3, 6, 9, 12]");
        assert!(
            super::release() > 0,
            "a second release is as safe as the first"
        );
    }
}
