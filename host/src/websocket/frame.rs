//! Just enough of RFC 6455 framing for a byte pipe to end a connection cleanly: follow the
//! frame boundaries of a byte stream (without unmasking or buffering a payload), and
//! encode the one frame the gateway ever sends itself, a Close.
//!
//! The tunnel copies bytes, not frames; when it closes a connection on its own (idle
//! timeout, maximum duration, shutdown) it may add a Close frame only between two frames,
//! and only if that peer was not sent a Close already (RFC 6455 §5.5.1: nothing follows a
//! Close).

/// Close status 1001, "going away": the gateway ends the connection (timeout, shutdown).
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// Opcode of a Close frame.
const OPCODE_CLOSE: u8 = 0x8;
/// The longest frame head: 2 bytes, an 8-byte extended length, a 4-byte mask key.
const MAX_HEAD_BYTES: usize = 14;
/// The longest control frame payload (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD_BYTES: usize = 125;

/// Follows the frames in one direction of a connection.
#[derive(Debug, Default)]
pub struct FrameFollower {
    state: State,
    /// A Close frame went by.
    saw_close: bool,
}

#[derive(Debug)]
enum State {
    /// Reading a frame head; `have` bytes of it so far.
    Head {
        head: [u8; MAX_HEAD_BYTES],
        have: usize,
    },
    /// Inside a payload, `remaining` bytes to go.
    Payload { remaining: u64 },
}

impl Default for State {
    fn default() -> Self {
        State::Head {
            head: [0; MAX_HEAD_BYTES],
            have: 0,
        }
    }
}

impl FrameFollower {
    /// Takes note of `bytes`, the next bytes of the stream.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Payload { remaining } => {
                    let n = bytes
                        .len()
                        .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                    *remaining -= n as u64;
                    bytes = &bytes[n..];
                    if *remaining == 0 {
                        self.state = State::default();
                    }
                }
                State::Head { head, have } => {
                    head[*have] = bytes[0];
                    *have += 1;
                    bytes = &bytes[1..];
                    if *have < head_len(head, *have) {
                        continue;
                    }
                    if head[0] & 0x0f == OPCODE_CLOSE {
                        self.saw_close = true;
                    }
                    let remaining = payload_len(head);
                    self.state = if remaining == 0 {
                        State::default()
                    } else {
                        State::Payload { remaining }
                    };
                }
            }
        }
    }

    /// Whether a Close frame went by (complete with its head).
    pub fn saw_close(&self) -> bool {
        self.saw_close
    }

    /// For the bytes written to a peer: whether the gateway may add a Close of its own
    /// now, between two frames and with no Close sent before.
    pub fn may_send_close(&self) -> bool {
        !self.saw_close && matches!(self.state, State::Head { have: 0, .. })
    }
}

/// The length of the head that starts with `head[..have]` (`have` ≥ 1); 2 until the
/// second byte is known.
fn head_len(head: &[u8; MAX_HEAD_BYTES], have: usize) -> usize {
    if have < 2 {
        return 2;
    }
    let extended = match head[1] & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if head[1] & 0x80 != 0 { 4 } else { 0 };
    2 + extended + mask
}

/// The payload length of a complete head.
fn payload_len(head: &[u8; MAX_HEAD_BYTES]) -> u64 {
    match head[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([head[2], head[3]])),
        127 => u64::from_be_bytes([
            head[2], head[3], head[4], head[5], head[6], head[7], head[8], head[9],
        ]),
        len => u64::from(len),
    }
}

/// A Close frame with `code` and `reason` (cut to fit a control frame), masked with `mask`
/// when it goes to a server (RFC 6455 §5.3: client frames are masked, server frames not).
pub fn close_frame(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD_BYTES - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    let mut frame = Vec::with_capacity(2 + 4 + payload.len());
    frame.push(0x80 | OPCODE_CLOSE);
    // At most 125 bytes: the 7-bit length.
    let len = payload.len() as u8;
    match mask {
        Some(key) => {
            frame.push(0x80 | len);
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => {
            frame.push(len);
            frame.extend_from_slice(&payload);
        }
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame as a peer would send it: FIN, `opcode`, `payload`, masked or not.
    fn frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = vec![0x80 | opcode];
        let mask_bit = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(mask_bit | n as u8),
            n if n <= usize::from(u16::MAX) => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match mask {
            Some(key) => {
                out.extend_from_slice(&key);
                out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            }
            None => out.extend_from_slice(payload),
        }
        out
    }

    #[test]
    fn boundaries_are_followed_across_every_split() {
        let mut stream = frame(0x1, b"hello", None);
        stream.extend(frame(0x2, &[7; 300], Some([1, 2, 3, 4])));
        stream.extend(frame(0x2, &[9; 70_000], None));
        stream.extend(frame(0x9, b"", Some([5, 6, 7, 8])));
        let ends = [7, 7 + 308, 7 + 308 + 70_010, stream.len()];
        for chunk in [1, 2, 3, 13, 1000, stream.len()] {
            let mut follower = FrameFollower::default();
            let mut fed = 0;
            for piece in stream.chunks(chunk) {
                follower.feed(piece);
                fed += piece.len();
                assert_eq!(
                    follower.may_send_close(),
                    ends.contains(&fed),
                    "chunk {chunk}, after {fed} bytes"
                );
            }
        }
    }

    #[test]
    fn no_close_after_a_close() {
        let mut follower = FrameFollower::default();
        follower.feed(&frame(0x1, b"x", Some([0; 4])));
        assert!(follower.may_send_close());
        assert!(!follower.saw_close());
        follower.feed(&close_frame(1000, "bye", Some([9, 8, 7, 6])));
        assert!(follower.saw_close());
        assert!(!follower.may_send_close());
    }

    #[test]
    fn close_frames_are_well_formed() {
        assert_eq!(
            close_frame(1001, "idle", None),
            [0x88, 6, 0x03, 0xe9, b'i', b'd', b'l', b'e']
        );
        let masked = close_frame(1001, "", Some([1, 2, 3, 4]));
        assert_eq!(masked, [0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xe9 ^ 2]);
        // Reasons are cut to fit 125 bytes, on a character boundary.
        let long = "é".repeat(100);
        let frame = close_frame(1001, &long, None);
        assert_eq!(frame[1], 124);
        assert!(std::str::from_utf8(&frame[4..]).is_ok());
    }
}
