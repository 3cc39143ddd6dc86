//! The zip subset torch writes, parsed here so that every size it claims is
//! checked against the file before anything is read or allocated.

use super::*;

/// One entry of a zip's central directory, checked against the file.
#[derive(Clone, Copy)]
pub(super) struct ZipEntry<'a> {
    pub(super) name: &'a [u8],
    /// The entry's stored (possibly deflated) bytes, inside the file.
    pub(super) raw: &'a [u8],
    pub(super) deflated: bool,
    /// Uncompressed size, as claimed by the directory.
    pub(super) size: u64,
    pub(super) crc: u32,
}

/// The zip subset torch writes: one disk, stored or deflated entries, with or
/// without zip64 records. Entries borrow from the file's bytes.
pub(super) struct Zip<'a> {
    pub(super) entries: Vec<ZipEntry<'a>>,
    pub(super) by_name: HashMap<&'a [u8], usize>,
}

pub(super) fn le<const N: usize>(bytes: &[u8], at: usize, what: &str) -> Result<[u8; N]> {
    bytes.get(at..).and_then(|rest| rest.first_chunk::<N>()).copied().with_context(|| format!("{what} is cut short"))
}
pub(super) fn le16(bytes: &[u8], at: usize, what: &str) -> Result<u64> {
    Ok(u16::from_le_bytes(le(bytes, at, what)?).into())
}
pub(super) fn le32(bytes: &[u8], at: usize, what: &str) -> Result<u64> {
    Ok(u32::from_le_bytes(le(bytes, at, what)?).into())
}
pub(super) fn le64(bytes: &[u8], at: usize, what: &str) -> Result<u64> {
    Ok(u64::from_le_bytes(le(bytes, at, what)?))
}
/// `bytes[at..at + len]` with the bounds checked in u64.
pub(super) fn span<'a>(bytes: &'a [u8], at: u64, len: u64, what: &str) -> Result<&'a [u8]> {
    let end = at.checked_add(len).filter(|&end| end <= bytes.len() as u64);
    match end {
        Some(end) => Ok(&bytes[at as usize..end as usize]),
        None => bail!("{what} ({len} bytes at offset {at}) runs past the end of the file ({} bytes)", bytes.len()),
    }
}

pub(super) const EOCD_SIG: &[u8; 4] = b"PK\x05\x06";
pub(super) const EOCD64_LOCATOR_SIG: &[u8; 4] = b"PK\x06\x07";
pub(super) const EOCD64_SIG: &[u8; 4] = b"PK\x06\x06";
pub(super) const CENTRAL_SIG: &[u8; 4] = b"PK\x01\x02";
pub(super) const LOCAL_SIG: &[u8; 4] = b"PK\x03\x04";

impl<'a> Zip<'a> {
    pub(super) fn parse(bytes: &'a [u8]) -> Result<Self> {
        // The end record is the last 22 bytes plus a comment of up to 64 KiB.
        let search_from = bytes.len().saturating_sub(22 + 0xffff);
        let eocd = (search_from..=bytes.len().saturating_sub(22))
            .rev()
            .find(|&at| bytes.get(at..at + 4) == Some(EOCD_SIG) && at + 22 <= bytes.len())
            .context("no zip end-of-central-directory record")?;
        let what = "zip end record";
        let comment_len = le16(bytes, eocd + 20, what)?;
        if eocd as u64 + 22 + comment_len != bytes.len() as u64 {
            bail!("zip end record does not end the file (truncated or trailing bytes)");
        }
        if le16(bytes, eocd + 4, what)? != 0 || le16(bytes, eocd + 6, what)? != 0 {
            bail!("multi-disk zip archives are not supported");
        }
        let mut count = le16(bytes, eocd + 10, what)?;
        let on_disk = le16(bytes, eocd + 8, what)?;
        let mut dir_size = le32(bytes, eocd + 12, what)?;
        let mut dir_offset = le32(bytes, eocd + 16, what)?;
        let mut dir_end = eocd as u64;
        let saturated = count == 0xffff || dir_size == 0xffff_ffff || dir_offset == 0xffff_ffff;
        // zip64 (torch writes it even for small files): a locator just before the
        // end record points at the zip64 end record, whose values are authoritative.
        let locator = eocd.checked_sub(20).filter(|&l| bytes.get(l..l + 4) == Some(EOCD64_LOCATOR_SIG));
        if saturated && locator.is_none() {
            bail!("zip64 locator missing");
        }
        if let Some(locator) = locator {
            let record = le64(bytes, locator + 8, "zip64 locator")?;
            let record = usize::try_from(record)
                .ok()
                .filter(|&r| r.checked_add(56).is_some_and(|end| end <= locator))
                .context("bad zip64 end offset")?;
            if bytes.get(record..record + 4) != Some(EOCD64_SIG) {
                bail!("zip64 end record missing");
            }
            let what = "zip64 end record";
            count = le64(bytes, record + 32, what)?;
            if le64(bytes, record + 24, what)? != count {
                bail!("multi-disk zip archives are not supported");
            }
            dir_size = le64(bytes, record + 40, what)?;
            dir_offset = le64(bytes, record + 48, what)?;
            dir_end = record as u64;
        } else if on_disk != count {
            bail!("multi-disk zip archives are not supported");
        }
        if dir_offset.checked_add(dir_size) != Some(dir_end) {
            bail!("zip central directory ({dir_size} bytes at {dir_offset}) does not end where the end record starts");
        }
        // Each directory entry takes at least 46 bytes: refuse impossible counts before allocating.
        if count.saturating_mul(46) > dir_size {
            bail!("zip claims {count} entries in a {dir_size}-byte directory");
        }
        let directory = span(bytes, dir_offset, dir_size, "zip central directory")?;
        let mut entries = Vec::with_capacity(count as usize); // ≤ dir_size / 46
        let mut by_name = HashMap::with_capacity(count as usize);
        let mut at = 0usize;
        for index in 0..count {
            let what = "zip directory entry";
            if directory.get(at..at + 4) != Some(CENTRAL_SIG) {
                bail!("zip directory entry {index} has a bad signature");
            }
            let flags = le16(directory, at + 8, what)?;
            let method = le16(directory, at + 10, what)?;
            let crc = le32(directory, at + 16, what)? as u32;
            let mut packed = le32(directory, at + 20, what)?;
            let mut size = le32(directory, at + 24, what)?;
            let name_len = le16(directory, at + 28, what)? as usize;
            let extra_len = le16(directory, at + 30, what)? as usize;
            let comment_len = le16(directory, at + 32, what)? as usize;
            let mut local = le32(directory, at + 42, what)?;
            let name = directory.get(at + 46..at + 46 + name_len).context("zip entry name is cut short")?;
            let extra = directory
                .get(at + 46 + name_len..at + 46 + name_len + extra_len)
                .context("zip entry extra field is cut short")?;
            at += 46 + name_len + extra_len + comment_len;
            let entry_name = String::from_utf8_lossy(name);
            if flags & 1 != 0 {
                bail!("zip entry {} is encrypted", quoted(&entry_name));
            }
            // zip64 extended information: the 64-bit values whose 32-bit fields are saturated.
            let mut field = 0;
            while field + 4 <= extra.len() {
                let id = le16(extra, field, "zip extra field")?;
                let len = le16(extra, field + 2, "zip extra field")? as usize;
                let body = extra.get(field + 4..field + 4 + len).context("zip extra field is cut short")?;
                if id == 1 {
                    let mut values = body.chunks_exact(8).map(|c| c.first_chunk::<8>().map(|a| u64::from_le_bytes(*a)));
                    for target in [&mut size, &mut packed, &mut local] {
                        if *target == 0xffff_ffff {
                            *target = values.next().flatten().context("zip64 extra field is cut short")?;
                        }
                    }
                }
                field += 4 + len;
            }
            let what = "zip local header";
            let local_at = usize::try_from(local)
                .ok()
                .filter(|&l| l < bytes.len())
                .context("zip local header offset past the end")?;
            if bytes.get(local_at..local_at + 4) != Some(LOCAL_SIG) {
                bail!("zip entry {}: no local header at offset {local}", quoted(&entry_name));
            }
            let local_name_len = le16(bytes, local_at + 26, what)?;
            let local_extra_len = le16(bytes, local_at + 28, what)?;
            let local_name = span(bytes, local as u64 + 30, local_name_len, "zip local name")?;
            if local_name != name {
                bail!("zip entry {}: local header names another file", quoted(&entry_name));
            }
            let start = local + 30 + local_name_len + local_extra_len;
            let raw = span(bytes, start, packed, &format!("zip entry {}", quoted(&entry_name)))?;
            let deflated = match method {
                0 if packed == size => false,
                0 => bail!("zip entry {}: stored with {packed} bytes but claims {size}", quoted(&entry_name)),
                8 => true,
                other => bail!("zip entry {}: unsupported compression method {other}", quoted(&entry_name)),
            };
            if by_name.insert(name, entries.len()).is_some() {
                bail!("zip holds two entries named {}", quoted(&entry_name));
            }
            entries.push(ZipEntry { name, raw, deflated, size, crc });
        }
        Ok(Self { entries, by_name })
    }

    pub(super) fn names(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.entries.iter().map(|e| e.name)
    }

    pub(super) fn entry(&self, name: &[u8]) -> Option<ZipEntry<'a>> {
        self.by_name.get(name).and_then(|&i| self.entries.get(i)).copied()
    }

    /// An entry's bytes, borrowed when stored; inflation is bounded by the
    /// claimed size and by `budget`. Checks the CRC-32 (torch writes 0 when
    /// CRCs are switched off; 0 is then taken as "not recorded").
    pub(super) fn read(&self, entry: ZipEntry<'a>, budget: &mut Budget) -> Result<std::borrow::Cow<'a, [u8]>> {
        let name = || quoted(&String::from_utf8_lossy(entry.name));
        let data = if entry.deflated {
            budget.spend(entry.size, || format!("zip entry {}", name()))?;
            let mut out = Vec::new();
            out.try_reserve_exact(entry.size as usize).map_err(|_| anyhow!("zip entry {} is too large", name()))?;
            flate2::read::DeflateDecoder::new(entry.raw)
                .take(entry.size + 1)
                .read_to_end(&mut out)
                .with_context(|| format!("zip entry {}: bad deflate data", name()))?;
            if out.len() as u64 != entry.size {
                bail!("zip entry {} inflates to {} bytes, the directory says {}", name(), out.len(), entry.size);
            }
            std::borrow::Cow::Owned(out)
        } else {
            std::borrow::Cow::Borrowed(entry.raw)
        };
        if entry.crc != 0 {
            let mut crc = flate2::Crc::new();
            crc.update(&data);
            if crc.sum() != entry.crc {
                bail!("zip entry {} fails its CRC-32 check (corrupted)", name());
            }
        }
        Ok(data)
    }
}
