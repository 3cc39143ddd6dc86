//! The pickle virtual machine, restricted to the opcodes `torch.save` emits
//! and to an allow-list of globals; values share their contents and are
//! charged to a node budget. Over 400 lines: one opcode table, which reads
//! best in one place.

use super::*;

/// The pickle globals a state_dict may name.
#[derive(Debug, Clone, Copy)]
pub(super) enum Global {
    OrderedDict,
    RebuildTensor,
    RebuildParameter,
    Storage(Kind),
}

/// The allow-list: `collections.OrderedDict`, torch's tensor and parameter
/// rebuild functions, and the typed storage classes (`torch.FloatStorage`…).
pub(super) fn allowed_global(module: &str, name: &str) -> Option<Global> {
    match (module, name) {
        ("collections", "OrderedDict") => Some(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => Some(Global::RebuildTensor),
        ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
        ("torch", storage) => storage_kind(storage).map(Global::Storage),
        _ => None,
    }
}

/// The error for a global outside the allow-list.
#[derive(Debug)]
pub(super) struct Refused(pub(super) String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refusing pickle global {}", self.0)
    }
}

impl std::error::Error for Refused {}

pub(super) fn global(module: &str, name: &str) -> Result<Value> {
    match allowed_global(module, name) {
        Some(g) => Ok(Value::Global(g)),
        None => Err(Refused(one_line(&format!("{}.{}", short(module), short(name)))).into()),
    }
}

pub(super) fn short(text: &str) -> String {
    if text.chars().count() > 80 {
        text.chars().take(80).chain(['…']).collect()
    } else {
        text.to_owned()
    }
}

/// A value on the pickle stack; only what state_dicts contain. Containers
/// share their contents and are copied on write.
#[derive(Debug, Clone)]
pub(super) enum Value {
    None,
    Bool(bool),
    Int(i128),
    Float,
    Str(Rc<str>),
    Bytes,
    Tuple(Seq),
    List(Seq),
    /// Keys and values alternate.
    Dict(Seq),
    Global(Global),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorSpec>),
}

#[derive(Debug, Clone, Default)]
pub(super) struct Seq(pub(super) Rc<SeqData>);

#[derive(Debug, Clone, Default)]
pub(super) struct SeqData {
    /// 1 + the deepest item's depth.
    pub(super) depth: u32,
    pub(super) items: Vec<Value>,
}

impl std::ops::Deref for Seq {
    type Target = SeqData;
    fn deref(&self) -> &SeqData {
        &self.0
    }
}

impl Seq {
    pub(super) fn new(items: Vec<Value>) -> Result<Self> {
        let depth = 1 + items.iter().map(Value::depth).max().unwrap_or(0);
        if depth > MAX_DEPTH {
            bail!("pickle nests containers deeper than {MAX_DEPTH}");
        }
        Ok(Seq(Rc::new(SeqData { depth, items })))
    }
}

impl Value {
    pub(super) fn depth(&self) -> u32 {
        match self {
            Value::Tuple(s) | Value::List(s) | Value::Dict(s) => s.depth,
            _ => 0,
        }
    }
    pub(super) fn describe(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(b) => format!("bool {b}"),
            Value::Int(i) => format!("integer {i}"),
            Value::Float => "float".into(),
            Value::Str(s) => format!("string {}", quoted(s)),
            Value::Bytes => "bytes".into(),
            Value::Tuple(s) => format!("tuple of {}", s.items.len()),
            Value::List(s) => format!("list of {}", s.items.len()),
            Value::Dict(s) => format!("dict of {}", s.items.len() / 2),
            Value::Global(g) => format!("global {g:?}"),
            Value::Storage(_) => "storage".into(),
            Value::Tensor(_) => "tensor".into(),
        }
    }
    pub(super) fn as_int(&self) -> Result<i64> {
        match self {
            Value::Int(i) => i64::try_from(*i).map_err(|_| anyhow!("integer {i} is out of range")),
            other => bail!("expected an integer, found a {}", other.describe()),
        }
    }
    pub(super) fn as_ints(&self) -> Result<Vec<i64>> {
        match self {
            Value::Tuple(s) | Value::List(s) if s.items.len() <= MAX_DIMS => {
                s.items.iter().map(Value::as_int).collect()
            }
            Value::Tuple(s) | Value::List(s) => bail!("{} dimensions, at most {MAX_DIMS} are supported", s.items.len()),
            other => bail!("expected a tuple of integers, found a {}", other.describe()),
        }
    }
}

/// The pickle virtual machine, restricted to the opcodes of protocols 0 to 5
/// that `torch.save` emits (and a few neighbours).
pub(super) struct Unpickler<'a> {
    pub(super) data: &'a [u8],
    pub(super) pos: usize,
    pub(super) stack: Vec<Value>,
    /// Stack lengths at each MARK.
    pub(super) marks: Vec<usize>,
    pub(super) memo: HashMap<u32, Value>,
    /// Values made or copied so far (the memory budget).
    pub(super) nodes: usize,
    pub(super) storages: HashMap<Rc<str>, StorageInfo>,
}

impl<'a> Unpickler<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            pos: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            nodes: 0,
            storages: HashMap::new(),
        }
    }

    /// Charges `n` values to the budget: at most 2 per byte read, plus 4096.
    pub(super) fn charge(&mut self, n: usize) -> Result<()> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > 2 * self.pos + 4096 {
            bail!("pickle builds more values than its size allows (memo or DUP bomb?) at byte {}", self.pos);
        }
        Ok(())
    }
    pub(super) fn push(&mut self, value: Value) -> Result<()> {
        self.charge(1)?;
        self.stack.push(value);
        Ok(())
    }
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.data.len());
        let Some(end) = end else { bail!("pickle ends early (wants {n} bytes at byte {})", self.pos) };
        let slice = &self.data[self.pos..end];
        self.pos = end;
        Ok(slice)
    }
    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        self.take(N)?.first_chunk::<N>().copied().context("pickle ends early")
    }
    pub(super) fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    pub(super) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub(super) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub(super) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub(super) fn len32(&mut self) -> Result<usize> {
        Ok(self.u32()? as usize)
    }
    pub(super) fn len64(&mut self) -> Result<usize> {
        usize::try_from(self.u64()?).context("length out of range")
    }
    pub(super) fn line(&mut self) -> Result<&'a str> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == b'\n').context("pickle ends inside a text line")?;
        self.pos += end + 1;
        std::str::from_utf8(&rest[..end]).map_err(|_| anyhow!("pickle text line is not UTF-8"))
    }
    pub(super) fn text(&mut self, n: usize) -> Result<Value> {
        let raw = self.take(n)?;
        let s = std::str::from_utf8(raw).map_err(|_| anyhow!("pickle string at byte {} is not UTF-8", self.pos))?;
        Ok(Value::Str(Rc::from(s)))
    }
    pub(super) fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }
    pub(super) fn pop(&mut self) -> Result<Value> {
        if self.stack.len() <= self.floor() {
            bail!("pickle stack underflow at byte {}", self.pos);
        }
        self.stack.pop().context("pickle stack underflow")
    }
    pub(super) fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let mark = self.marks.pop().context("pickle MARK missing")?;
        if mark > self.stack.len() {
            bail!("pickle MARK past the stack");
        }
        Ok(self.stack.split_off(mark))
    }
    pub(super) fn top(&self) -> Result<&Value> {
        if self.stack.len() <= self.floor() {
            bail!("pickle stack empty at byte {}", self.pos);
        }
        self.stack.last().context("pickle stack empty")
    }
    /// Appends to the list or dict on top of the stack (copying it first
    /// when it is shared, charged per element).
    pub(super) fn extend_top(&mut self, new_items: Vec<Value>, want_dict: bool) -> Result<()> {
        if want_dict && !new_items.len().is_multiple_of(2) {
            bail!("SETITEMS with an odd number of items");
        }
        let shared = match self.top()? {
            Value::List(s) if !want_dict => Rc::strong_count(&s.0) > 1,
            Value::Dict(s) if want_dict => Rc::strong_count(&s.0) > 1,
            other => {
                bail!("cannot add items to a {} at byte {}", other.describe(), self.pos)
            }
        };
        let top_len = match self.stack.last() {
            Some(Value::List(s) | Value::Dict(s)) => s.items.len(),
            _ => 0,
        };
        self.charge(new_items.len() + if shared { top_len } else { 0 })?;
        let depth = 1 + new_items.iter().map(Value::depth).max().unwrap_or(0);
        if depth > MAX_DEPTH {
            bail!("pickle nests containers deeper than {MAX_DEPTH}");
        }
        if let Some(Value::List(s) | Value::Dict(s)) = self.stack.last_mut() {
            let data = Rc::make_mut(&mut s.0);
            data.depth = data.depth.max(depth);
            data.items.extend(new_items);
        }
        Ok(())
    }
    pub(super) fn memo_put(&mut self, idx: u32) -> Result<()> {
        let top = self.top()?.clone();
        self.charge(1)?;
        self.memo.insert(idx, top);
        Ok(())
    }
    pub(super) fn memo_get(&mut self, idx: u32) -> Result<()> {
        let value = self.memo.get(&idx).with_context(|| format!("pickle memo {idx} is not set"))?.clone();
        self.push(value)
    }
    pub(super) fn int(&mut self, v: i128) -> Result<()> {
        self.push(Value::Int(v))
    }
    pub(super) fn long(&mut self, n: usize) -> Result<()> {
        if n > MAX_INT_BYTES {
            bail!("pickle integer of {n} bytes is too long");
        }
        let raw = self.take(n)?;
        let fill = if raw.last().is_some_and(|b| b & 0x80 != 0) { 0xff } else { 0 };
        let mut full = [fill; MAX_INT_BYTES];
        full[..n].copy_from_slice(raw);
        self.int(i128::from_le_bytes(full))
    }
    pub(super) fn text_int(&mut self) -> Result<()> {
        let line = self.line()?;
        let v = match line {
            "00" => return self.push(Value::Bool(false)),
            "01" => return self.push(Value::Bool(true)),
            other => other
                .trim_end_matches('L')
                .parse::<i128>()
                .map_err(|_| anyhow!("bad pickle integer {}", quoted(other)))?,
        };
        self.int(v)
    }
    /// Builds an instance of `class` from `args` (NEWOBJ, OBJ, INST).
    pub(super) fn instantiate(&mut self, class: Value, args: Vec<Value>) -> Result<()> {
        match class {
            Value::Global(Global::OrderedDict) if args.is_empty() => self.push(Value::Dict(Seq::default())),
            other => bail!("cannot instantiate {} at byte {}", other.describe(), self.pos),
        }
    }

    /// Runs to STOP; returns the value, the bytes consumed and the storages
    /// named by persistent ids.
    pub(super) fn run(mut self) -> Result<(Value, usize, HashMap<Rc<str>, StorageInfo>)> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        bail!("unsupported pickle protocol {proto}");
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: a hint only
                }
                b'.' => {
                    let value = self.pop()?;
                    if !self.marks.is_empty() {
                        bail!("pickle stops inside a MARK");
                    }
                    return Ok((value, self.pos, self.storages));
                }
                b'(' => {
                    self.charge(1)?;
                    self.marks.push(self.stack.len());
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'0' => {
                    self.pop()?;
                }
                b'2' => {
                    let top = self.top()?.clone();
                    self.push(top)?;
                }
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'J' => {
                    let v = i32::from_le_bytes(self.array()?);
                    self.int(v.into())?;
                }
                b'K' => {
                    let v = self.u8()?;
                    self.int(v.into())?;
                }
                b'M' => {
                    let v = self.u16()?;
                    self.int(v.into())?;
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    self.long(n)?;
                }
                0x8b => {
                    let n = self.len32()?;
                    self.long(n)?;
                }
                b'I' | b'L' => self.text_int()?,
                b'G' => {
                    self.take(8)?;
                    self.push(Value::Float)?;
                }
                b'F' => {
                    self.line()?;
                    self.push(Value::Float)?;
                }
                b'X' => {
                    let n = self.len32()?;
                    let s = self.text(n)?;
                    self.push(s)?;
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = self.text(n)?;
                    self.push(s)?;
                }
                0x8d => {
                    let n = self.len64()?;
                    let s = self.text(n)?;
                    self.push(s)?;
                }
                b'S' | b'V' => {
                    // STRING / UNICODE (protocol 0): a text line; only its length matters.
                    let line = self.line()?;
                    self.push(Value::Str(Rc::from(line)))?;
                }
                b'T' | b'B' => {
                    let n = self.len32()?;
                    self.take(n)?;
                    self.push(Value::Bytes)?;
                }
                b'U' | b'C' => {
                    let n = self.u8()? as usize;
                    self.take(n)?;
                    self.push(Value::Bytes)?;
                }
                0x8e => {
                    let n = self.len64()?;
                    self.take(n)?;
                    self.push(Value::Bytes)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let g = global(module, name)?;
                    self.push(g)?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let g = match (&module, &name) {
                        (Value::Str(module), Value::Str(name)) => global(module, name)?,
                        _ => bail!("STACK_GLOBAL of a {} and a {}", module.describe(), name.describe()),
                    };
                    self.push(g)?;
                }
                b'i' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let class = global(module, name)?;
                    let args = self.pop_mark()?;
                    self.instantiate(class, args)?;
                }
                b'o' => {
                    let mut items = self.pop_mark()?.into_iter();
                    let class = items.next().context("OBJ without a class")?;
                    self.instantiate(class, items.collect())?;
                }
                0x81 => {
                    let args = self.pop()?;
                    let class = self.pop()?;
                    let args = match args {
                        Value::Tuple(s) => s.items.clone(),
                        other => bail!("NEWOBJ arguments are a {}", other.describe()),
                    };
                    self.instantiate(class, args)?;
                }
                b')' => self.push(Value::Tuple(Seq::default()))?,
                b't' => {
                    let items = self.pop_mark()?;
                    let seq = Seq::new(items)?;
                    self.push(Value::Tuple(seq))?;
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let at = self.stack.len().checked_sub(n).filter(|&at| at >= self.floor());
                    let at = at.context("pickle stack underflow")?;
                    let items = self.stack.split_off(at);
                    let seq = Seq::new(items)?;
                    self.push(Value::Tuple(seq))?;
                }
                b']' => self.push(Value::List(Seq::default()))?,
                b'l' => {
                    let items = self.pop_mark()?;
                    let seq = Seq::new(items)?;
                    self.push(Value::List(seq))?;
                }
                b'a' => {
                    let item = self.pop()?;
                    self.extend_top(vec![item], false)?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.extend_top(items, false)?;
                }
                b'}' => self.push(Value::Dict(Seq::default()))?,
                b'd' => {
                    let items = self.pop_mark()?;
                    if !items.len().is_multiple_of(2) {
                        bail!("DICT with an odd number of items");
                    }
                    let seq = Seq::new(items)?;
                    self.push(Value::Dict(seq))?;
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    self.extend_top(vec![key, value], true)?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.extend_top(items, true)?;
                }
                b'p' => {
                    let idx = self.line()?.parse().map_err(|_| anyhow!("bad PUT index"))?;
                    self.memo_put(idx)?;
                }
                b'q' => {
                    let idx = self.u8()?.into();
                    self.memo_put(idx)?;
                }
                b'r' => {
                    let idx = self.u32()?;
                    self.memo_put(idx)?;
                }
                0x94 => {
                    let idx = u32::try_from(self.memo.len()).context("memo full")?;
                    self.memo_put(idx)?;
                }
                b'g' => {
                    let idx = self.line()?.parse().map_err(|_| anyhow!("bad GET index"))?;
                    self.memo_get(idx)?;
                }
                b'h' => {
                    let idx = self.u8()?.into();
                    self.memo_get(idx)?;
                }
                b'j' => {
                    let idx = self.u32()?;
                    self.memo_get(idx)?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let storage = self.persistent_storage(pid)?;
                    self.push(storage)?;
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let value = reduce(func, args)?;
                    self.push(value)?;
                }
                b'b' => {
                    // BUILD: the state (e.g. a state_dict's `_metadata`) is not needed;
                    // every global in it has passed the allow-list.
                    self.pop()?;
                    self.top()?;
                }
                other => bail!("unsupported pickle opcode 0x{other:02x} at byte {}", self.pos - 1),
            }
        }
    }

    /// A persistent id: ("storage", storage type, key, location, numel[, view]).
    pub(super) fn persistent_storage(&mut self, pid: Value) -> Result<Value> {
        let Value::Tuple(fields) = &pid else { bail!("persistent id is a {}, not a tuple", pid.describe()) };
        let (kind, key, numel) = match fields.items.as_slice() {
            [Value::Str(tag), Value::Global(Global::Storage(kind)), Value::Str(key), _location, numel, rest @ ..]
                if tag.as_ref() == "storage" && rest.iter().all(|v| matches!(v, Value::None)) =>
            {
                (*kind, key.clone(), numel.as_int()?)
            }
            _ => bail!("unsupported persistent id ({})", pid.describe()),
        };
        if key.len() > 64 {
            bail!("storage key {} is too long", quoted(&key));
        }
        let numel = u64::try_from(numel).map_err(|_| anyhow!("storage {} has {numel} elements", quoted(&key)))?;
        let byte_len = numel.checked_mul(element_size(kind)).context("storage size overflows")?;
        let info = StorageInfo { kind, numel, byte_len };
        if let Some(seen) = self.storages.insert(key.clone(), info) {
            if seen != info {
                bail!("storage {} is named with two different types or sizes", quoted(&key));
            }
        }
        Ok(Value::Storage(Rc::new(StorageRef { key, info })))
    }
}

pub(super) fn reduce(func: Value, args: Value) -> Result<Value> {
    let Value::Global(global) = func else { bail!("REDUCE calls a {}, not a global", func.describe()) };
    let Value::Tuple(args) = args else { bail!("REDUCE arguments are a {}, not a tuple", args.describe()) };
    match global {
        Global::OrderedDict if args.items.is_empty() => Ok(Value::Dict(Seq::default())),
        Global::RebuildTensor => {
            let [storage, offset, size, stride, ..] = args.items.as_slice() else {
                bail!("_rebuild_tensor with {} arguments", args.items.len())
            };
            let Value::Storage(storage) = storage else { bail!("tensor over a {}, not a storage", storage.describe()) };
            let size = size.as_ints()?;
            let stride = stride.as_ints()?;
            if size.len() != stride.len() {
                bail!("tensor with {} sizes and {} strides", size.len(), stride.len());
            }
            Ok(Value::Tensor(Rc::new(TensorSpec { storage: storage.clone(), offset: offset.as_int()?, size, stride })))
        }
        Global::RebuildParameter => match args.items.first() {
            Some(tensor @ Value::Tensor(_)) => Ok(tensor.clone()),
            _ => bail!("_rebuild_parameter without a tensor"),
        },
        other => bail!("unsupported call to {other:?} with {} arguments", args.items.len()),
    }
}
