using System.IO.Hashing;

namespace Broker.Storage.Groups;

/// <summary>
/// Turn-taking by message key, for a group ordered by key: of the messages with one key, only one is outstanding at a
/// time (in flight, waiting for its redelivery, delayed, or on its way to the dead letters): it holds the key's turn.
/// The reader's later messages with that key wait here, in offset order, until the holder is done (acknowledged or
/// dead-lettered); then the next one takes the turn. Messages without a key take no turn.
/// <para>Keys are identified by their 64-bit XxHash3: two keys with one hash share a turn, which costs parallelism,
/// never order. Pure state, no locks: <see cref="ConsumerGroupState"/> owns it.</para>
/// </summary>
internal sealed class KeyTurns
{
    private readonly Dictionary<ulong, Turn> _turns = [];
    // Holder offset → its key, to find the turn when the holder is done.
    private readonly Dictionary<long, ulong> _keyOfHolder = [];

    /// <summary>Messages read and waiting for their key's turn.</summary>
    public int WaitingCount { get; private set; }

    /// <summary>The key's identity in the turns.</summary>
    public static ulong Hash(ReadOnlySpan<byte> key) => XxHash3.HashToUInt64(key);

    /// <summary>True when <paramref name="location"/> may go out now (it holds its key's turn); else it waits in line.</summary>
    public bool TryTakeTurn(MessageLocation location, ulong key)
    {
        if (_turns.TryGetValue(key, out var turn))
        {
            if (turn.Holder == location.Offset)
                return true;
            turn.Waiting.Enqueue(location);
            WaitingCount++;
            return false;
        }
        _turns[key] = new Turn(location.Offset);
        _keyOfHolder[location.Offset] = key;
        return true;
    }

    /// <summary>
    /// The message at <paramref name="offset"/> is done for the group. When it held a turn, the next message waiting
    /// with its key (if any) takes the turn and is returned, for the caller to make visible.
    /// </summary>
    public bool TryPassTurn(long offset, out MessageLocation next)
    {
        next = default;
        if (!_keyOfHolder.Remove(offset, out ulong key))
            return false;
        var turn = _turns[key];
        if (!turn.Waiting.TryDequeue(out next))
        {
            _turns.Remove(key);
            return false;
        }
        WaitingCount--;
        turn.Holder = next.Offset;
        _keyOfHolder[next.Offset] = key;
        return true;
    }

    /// <summary>Offsets waiting for a turn, for invariant checks.</summary>
    public IEnumerable<long> WaitingOffsets => _turns.Values.SelectMany(t => t.Waiting.Select(l => l.Offset));

    /// <summary>Offsets holding a turn, for invariant checks.</summary>
    public IEnumerable<long> Holders => _keyOfHolder.Keys;

    private sealed class Turn(long holder)
    {
        public long Holder { get; set; } = holder;
        public Queue<MessageLocation> Waiting { get; } = new();
    }
}
