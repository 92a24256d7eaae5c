using System.Buffers.Binary;
using System.Text;
using FASTER.core;

namespace Broker.Storage.Groups;

/// <summary>Kinds of record in a topic's group-state log.</summary>
internal enum GroupRecordKind : byte
{
    /// <summary>A group's whole state: written when it is created and by every checkpoint. Replaces what came before.</summary>
    Snapshot = 1,
    /// <summary>Offsets were acknowledged; carries the floor after them. Adds to what came before.</summary>
    Acknowledged = 2,
    /// <summary>Delivery counts of some offsets changed (a delivery, a release); the latest value wins.</summary>
    Attempts = 3,
    /// <summary>Settle timers changed (a delayed nack, an extended lease, or their end); the latest value wins.</summary>
    Timers = 4,
    /// <summary>The group was deleted: replay forgets it (a later snapshot of the same name is a new group).</summary>
    Deleted = 5,
}

/// <summary>How many deliveries one offset has had in a group.</summary>
internal readonly record struct AttemptCount(long Offset, int Attempts);

/// <summary>What a persisted settle timer holds a message for.</summary>
internal enum SettleTimerKind : byte
{
    /// <summary>No timer any more: the message's earlier timer no longer holds it.</summary>
    Cleared = 0,
    /// <summary>A nack with a delay: not delivered again before the time.</summary>
    Delayed = 1,
    /// <summary>An extended lease: the delivery (its token) stays the consumer's until the time.</summary>
    Leased = 2,
}

/// <summary>
/// A settle decision that outlives a restart: for delivery <paramref name="Attempt"/> of an offset, held until
/// <paramref name="UnixMs"/> (wall clock: monotonic time is per process). A timer applies only while the offset's
/// latest recorded delivery count is still <paramref name="Attempt"/>: a later delivery supersedes it.
/// </summary>
internal readonly record struct SettleTimer(long Offset, int Attempt, SettleTimerKind Kind, long UnixMs, ulong Token)
{
    public const int Bytes = 29;

    public static SettleTimer Cleared(long offset, int attempt) => new(offset, attempt, SettleTimerKind.Cleared, 0, 0);
}

/// <summary>
/// One record of the group-state log. Format version 2, little-endian:
/// <code>
/// byte kind, byte version (2), ushort group-name length, UTF-8 name, long ack floor, long floor address,
/// Snapshot only: long visibility timeout (ms), int max deliveries, ushort dead-letter-topic length, UTF-8 name;
/// then int range count, and per range: long first offset, int length (the offsets acknowledged above the floor,
/// as runs, so a snapshot stays small when one old message holds the floor back);
/// then int attempt count, and per entry: long offset, int deliveries so far;
/// then int timer count, and per timer: long offset, int attempt, byte kind, long unix ms, ulong token;
/// version 3 (a snapshot of a group with any policy beyond version 2's) then: byte policy flags (1: a retry backoff
/// follows, 2: ordered by key, 4: a filter follows, 8: priority levels follow, 16: newest first); with flag 1: long
/// initial ms, long max ms, double multiplier, double jitter; with flag 4: ushort pattern count, per pattern ushort
/// length and UTF-8 text, ushort header count, per header ushort name length, UTF-8 name, ushort value length, UTF-8
/// value; with flag 8: byte levels.
/// </code>
/// Version 1 records (written before settle timers were persisted) end after the attempts and are still read. Only a
/// group with one of those policies writes version 3, so a log without one stays readable by a broker from before them.
/// </summary>
internal readonly record struct GroupRecord(GroupRecordKind Kind, string Group, long AckFloor, long FloorAddress,
    GroupPolicy? Policy, IReadOnlyList<OffsetRange> Ranges, IReadOnlyList<AttemptCount> Attempts, IReadOnlyList<SettleTimer>? Timers = null)
    : ILogEnqueueEntry
{
    private const byte Version1 = 1;
    private const byte Version2 = 2;
    private const byte Version3 = 3;
    private const int RangeBytes = 12;
    private const int BackoffBytes = 32;
    private const byte HasBackoff = 1, IsOrderedByKey = 2, HasFilter = 4, HasPriorityLevels = 8, IsNewestFirst = 16;

    // Version 3 only where it is needed: a snapshot whose policy goes beyond version 2's.
    private byte PolicyFlags => Kind != GroupRecordKind.Snapshot ? (byte)0
        : (byte)((Policy!.RetryBackoff is null ? 0 : HasBackoff) | (Policy.OrderedByKey ? IsOrderedByKey : 0) | (Policy.Filter is null ? 0 : HasFilter)
            | (Policy.PriorityLevels > 1 ? HasPriorityLevels : 0) | (Policy.NewestFirst ? IsNewestFirst : 0));

    private int PolicyTrailerLength => PolicyFlags == 0 ? 0
        : 1 + ((PolicyFlags & HasBackoff) != 0 ? BackoffBytes : 0) + (Policy!.Filter is { } filter ? FilterLength(filter) : 0)
            + ((PolicyFlags & HasPriorityLevels) != 0 ? 1 : 0);

    private static int FilterLength(GroupFilter filter) =>
        2 + filter.KeyPatterns.Sum(p => 2 + Encoding.UTF8.GetByteCount(p))
        + 2 + filter.Headers.Sum(h => 4 + Encoding.UTF8.GetByteCount(h.Key) + Encoding.UTF8.GetByteCount(h.Value));

    /// <summary>The settle timers the record carries (none for most records).</summary>
    public IReadOnlyList<SettleTimer> SettleTimers => Timers ?? [];

    public static GroupRecord Snapshot(string group, long floor, long floorAddress, GroupPolicy policy, IEnumerable<long> offsets,
        IReadOnlyList<AttemptCount> attempts, IReadOnlyList<SettleTimer>? timers = null) =>
        new(GroupRecordKind.Snapshot, group, floor, floorAddress, policy, OffsetRange.From(offsets), attempts, timers);

    public static GroupRecord TimersChanged(string group, long floor, long floorAddress, IReadOnlyList<SettleTimer> timers) =>
        new(GroupRecordKind.Timers, group, floor, floorAddress, null, [], [], timers);

    /// <summary>The group is gone; written by DeleteGroup. A broker before this record kind cannot read a log holding one.</summary>
    public static GroupRecord Deleted(string group) => new(GroupRecordKind.Deleted, group, 0, 0, null, [], []);

    public static GroupRecord Acknowledged(string group, long floor, long floorAddress, IEnumerable<long> offsets) =>
        new(GroupRecordKind.Acknowledged, group, floor, floorAddress, null, OffsetRange.From(offsets), []);

    public static GroupRecord AttemptsChanged(string group, long floor, long floorAddress, IReadOnlyList<AttemptCount> attempts) =>
        new(GroupRecordKind.Attempts, group, floor, floorAddress, null, [], attempts);

    /// <summary>Every offset of the record's ranges.</summary>
    public IEnumerable<long> Offsets => Ranges.SelectMany(r => r.Offsets);

    public int SerializedLength =>
        4 + Encoding.UTF8.GetByteCount(Group) + 16
        + (Kind == GroupRecordKind.Snapshot ? 14 + Encoding.UTF8.GetByteCount(Policy!.DeadLetterTopic) : 0)
        + 4 + RangeBytes * Ranges.Count
        + 4 + RangeBytes * Attempts.Count
        + 4 + SettleTimer.Bytes * SettleTimers.Count
        + PolicyTrailerLength;

    public void SerializeTo(Span<byte> dest)
    {
        dest[0] = (byte)Kind;
        dest[1] = PolicyFlags == 0 ? Version2 : Version3;
        int nameLength = Encoding.UTF8.GetBytes(Group, dest[4..]);
        BinaryPrimitives.WriteUInt16LittleEndian(dest[2..], (ushort)nameLength);
        var rest = dest[(4 + nameLength)..];
        BinaryPrimitives.WriteInt64LittleEndian(rest, AckFloor);
        BinaryPrimitives.WriteInt64LittleEndian(rest[8..], FloorAddress);
        rest = rest[16..];
        if (Kind == GroupRecordKind.Snapshot)
        {
            BinaryPrimitives.WriteInt64LittleEndian(rest, (long)Policy!.VisibilityTimeout.TotalMilliseconds);
            BinaryPrimitives.WriteInt32LittleEndian(rest[8..], Policy.MaxDeliveries);
            int topicLength = Encoding.UTF8.GetBytes(Policy.DeadLetterTopic, rest[14..]);
            BinaryPrimitives.WriteUInt16LittleEndian(rest[12..], (ushort)topicLength);
            rest = rest[(14 + topicLength)..];
        }
        BinaryPrimitives.WriteInt32LittleEndian(rest, Ranges.Count);
        for (int i = 0; i < Ranges.Count; i++)
        {
            BinaryPrimitives.WriteInt64LittleEndian(rest[(4 + RangeBytes * i)..], Ranges[i].First);
            BinaryPrimitives.WriteInt32LittleEndian(rest[(12 + RangeBytes * i)..], Ranges[i].Length);
        }
        rest = rest[(4 + RangeBytes * Ranges.Count)..];
        BinaryPrimitives.WriteInt32LittleEndian(rest, Attempts.Count);
        for (int i = 0; i < Attempts.Count; i++)
        {
            BinaryPrimitives.WriteInt64LittleEndian(rest[(4 + RangeBytes * i)..], Attempts[i].Offset);
            BinaryPrimitives.WriteInt32LittleEndian(rest[(12 + RangeBytes * i)..], Attempts[i].Attempts);
        }
        rest = rest[(4 + RangeBytes * Attempts.Count)..];
        var timers = SettleTimers;
        BinaryPrimitives.WriteInt32LittleEndian(rest, timers.Count);
        for (int i = 0; i < timers.Count; i++)
        {
            var entry = rest[(4 + SettleTimer.Bytes * i)..];
            BinaryPrimitives.WriteInt64LittleEndian(entry, timers[i].Offset);
            BinaryPrimitives.WriteInt32LittleEndian(entry[8..], timers[i].Attempt);
            entry[12] = (byte)timers[i].Kind;
            BinaryPrimitives.WriteInt64LittleEndian(entry[13..], timers[i].UnixMs);
            BinaryPrimitives.WriteUInt64LittleEndian(entry[21..], timers[i].Token);
        }
        if (PolicyFlags != 0)
        {
            rest = rest[(4 + SettleTimer.Bytes * timers.Count)..];
            rest[0] = PolicyFlags;
            rest = rest[1..];
            if (Policy!.RetryBackoff is { } backoff)
            {
                BinaryPrimitives.WriteInt64LittleEndian(rest, (long)backoff.Initial.TotalMilliseconds);
                BinaryPrimitives.WriteInt64LittleEndian(rest[8..], (long)backoff.Max.TotalMilliseconds);
                BinaryPrimitives.WriteDoubleLittleEndian(rest[16..], backoff.Multiplier);
                BinaryPrimitives.WriteDoubleLittleEndian(rest[24..], backoff.Jitter);
                rest = rest[BackoffBytes..];
            }
            if (Policy.Filter is { } filter)
            {
                BinaryPrimitives.WriteUInt16LittleEndian(rest, (ushort)filter.KeyPatterns.Count);
                rest = rest[2..];
                foreach (string pattern in filter.KeyPatterns)
                    rest = WriteText(rest, pattern);
                BinaryPrimitives.WriteUInt16LittleEndian(rest, (ushort)filter.Headers.Count);
                rest = rest[2..];
                foreach (var (name, value) in filter.Headers)
                    rest = WriteText(WriteText(rest, name), value);
            }
            if (Policy.PriorityLevels > 1)
                rest[0] = (byte)Policy.PriorityLevels;
        }
    }

    // ushort length, then the UTF-8 bytes; returns what follows.
    private static Span<byte> WriteText(Span<byte> dest, string text)
    {
        int length = Encoding.UTF8.GetBytes(text, dest[2..]);
        BinaryPrimitives.WriteUInt16LittleEndian(dest, (ushort)length);
        return dest[(2 + length)..];
    }

    private static bool TryReadText(ref ReadOnlySpan<byte> source, out string text)
    {
        text = "";
        if (source.Length < 2)
            return false;
        int length = BinaryPrimitives.ReadUInt16LittleEndian(source);
        if (source.Length < 2 + length)
            return false;
        text = Encoding.UTF8.GetString(source.Slice(2, length));
        source = source[(2 + length)..];
        return true;
    }

    public static bool TryParse(ReadOnlySpan<byte> entry, out GroupRecord record)
    {
        // A record that passed its checksum but holds values out of range (damage FASTER's checksum missed, a bug) is
        // refused like a malformed one, never thrown out of recovery.
        try
        {
            return TryParseChecked(entry, out record);
        }
        catch (Exception error) when (error is ArgumentOutOfRangeException or OverflowException)
        {
            record = default;
            return false;
        }
    }

    private static bool TryParseChecked(ReadOnlySpan<byte> entry, out GroupRecord record)
    {
        record = default;
        if (entry.Length < 4 || entry[1] is not (Version1 or Version2 or Version3))
            return false;
        byte version = entry[1];
        var kind = (GroupRecordKind)entry[0];
        int nameLength = BinaryPrimitives.ReadUInt16LittleEndian(entry[2..]);
        if (kind is not (GroupRecordKind.Snapshot or GroupRecordKind.Acknowledged or GroupRecordKind.Attempts or GroupRecordKind.Timers
                or GroupRecordKind.Deleted)
            || entry.Length < 4 + nameLength + 20)
            return false;
        string group = Encoding.UTF8.GetString(entry.Slice(4, nameLength));
        var rest = entry[(4 + nameLength)..];
        long floor = BinaryPrimitives.ReadInt64LittleEndian(rest);
        long floorAddress = BinaryPrimitives.ReadInt64LittleEndian(rest[8..]);
        rest = rest[16..];
        GroupPolicy? policy = null;
        if (kind == GroupRecordKind.Snapshot)
        {
            if (rest.Length < 14)
                return false;
            long visibilityMs = BinaryPrimitives.ReadInt64LittleEndian(rest);
            int maxDeliveries = BinaryPrimitives.ReadInt32LittleEndian(rest[8..]);
            int topicLength = BinaryPrimitives.ReadUInt16LittleEndian(rest[12..]);
            if (rest.Length < 14 + topicLength + 4)
                return false;
            policy = new GroupPolicy(TimeSpan.FromMilliseconds(visibilityMs), maxDeliveries, Encoding.UTF8.GetString(rest.Slice(14, topicLength)));
            rest = rest[(14 + topicLength)..];
        }
        if (rest.Length < 4)
            return false;
        int count = BinaryPrimitives.ReadInt32LittleEndian(rest);
        if (count < 0 || rest.Length < 8 + (long)RangeBytes * count)
            return false;
        var ranges = new OffsetRange[count];
        for (int i = 0; i < count; i++)
        {
            ranges[i] = new OffsetRange(BinaryPrimitives.ReadInt64LittleEndian(rest[(4 + RangeBytes * i)..]),
                BinaryPrimitives.ReadInt32LittleEndian(rest[(12 + RangeBytes * i)..]));
            if (ranges[i].Length < 1)
                return false;
        }
        rest = rest[(4 + RangeBytes * count)..];
        int attemptCount = BinaryPrimitives.ReadInt32LittleEndian(rest);
        long attemptsEnd = 4 + (long)RangeBytes * attemptCount;
        if (attemptCount < 0 || (version == Version1 ? rest.Length != attemptsEnd : rest.Length < attemptsEnd + 4))
            return false;
        var attempts = new AttemptCount[attemptCount];
        for (int i = 0; i < attemptCount; i++)
        {
            attempts[i] = new AttemptCount(BinaryPrimitives.ReadInt64LittleEndian(rest[(4 + RangeBytes * i)..]),
                BinaryPrimitives.ReadInt32LittleEndian(rest[(12 + RangeBytes * i)..]));
        }
        SettleTimer[]? timers = null;
        var afterAttempts = rest[(int)attemptsEnd..];
        if (version == Version3)
        {
            // The timers' count says where they end; the policy trailer follows them.
            if (policy is null || afterAttempts.Length < 4)
                return false;
            long timersEnd = 4 + (long)SettleTimer.Bytes * BinaryPrimitives.ReadInt32LittleEndian(afterAttempts);
            if (timersEnd < 4 || timersEnd >= afterAttempts.Length || !TryParsePolicyTrailer(afterAttempts[(int)timersEnd..], ref policy))
                return false;
            afterAttempts = afterAttempts[..(int)timersEnd];
        }
        if (version != Version1 && !TryParseTimers(afterAttempts, out timers))
            return false;
        record = new GroupRecord(kind, group, floor, floorAddress, policy, ranges, attempts, timers);
        return true;
    }

    private static bool TryParsePolicyTrailer(ReadOnlySpan<byte> trailer, ref GroupPolicy policy)
    {
        byte flags = trailer[0];
        if ((flags & ~(HasBackoff | IsOrderedByKey | HasFilter | HasPriorityLevels | IsNewestFirst)) != 0)
            return false;
        policy = policy with { OrderedByKey = (flags & IsOrderedByKey) != 0, NewestFirst = (flags & IsNewestFirst) != 0 };
        var rest = trailer[1..];
        if ((flags & HasBackoff) != 0)
        {
            if (rest.Length < BackoffBytes)
                return false;
            policy = policy with
            {
                RetryBackoff = new RetryBackoff(TimeSpan.FromMilliseconds(BinaryPrimitives.ReadInt64LittleEndian(rest)),
                    TimeSpan.FromMilliseconds(BinaryPrimitives.ReadInt64LittleEndian(rest[8..])),
                    BinaryPrimitives.ReadDoubleLittleEndian(rest[16..]), BinaryPrimitives.ReadDoubleLittleEndian(rest[24..])),
            };
            rest = rest[BackoffBytes..];
        }
        if ((flags & HasFilter) != 0)
        {
            if (rest.Length < 2)
                return false;
            int patternCount = BinaryPrimitives.ReadUInt16LittleEndian(rest);
            rest = rest[2..];
            var patterns = new List<string>(patternCount);
            for (int i = 0; i < patternCount; i++)
            {
                if (!TryReadText(ref rest, out string pattern))
                    return false;
                patterns.Add(pattern);
            }
            if (rest.Length < 2)
                return false;
            int headerCount = BinaryPrimitives.ReadUInt16LittleEndian(rest);
            rest = rest[2..];
            var headers = new List<KeyValuePair<string, string>>(headerCount);
            for (int i = 0; i < headerCount; i++)
            {
                if (!TryReadText(ref rest, out string name) || !TryReadText(ref rest, out string value))
                    return false;
                headers.Add(new(name, value));
            }
            policy = policy with { Filter = new GroupFilter(patterns, headers) };
        }
        if ((flags & HasPriorityLevels) != 0)
        {
            if (rest.IsEmpty)
                return false;
            policy = policy with { PriorityLevels = rest[0] };
            rest = rest[1..];
        }
        // What the policy was checked against when the group was made: a stored one outside it is damage.
        return rest.IsEmpty && policy.RetryBackoff?.Problem() is null && policy.Filter?.Problem() is null
            && policy.PriorityLevels is 0 or (>= 2 and <= ReadyMessages.MaxLevels);
    }

    private static bool TryParseTimers(ReadOnlySpan<byte> rest, out SettleTimer[] timers)
    {
        timers = [];
        if (rest.Length < 4)
            return false;
        int count = BinaryPrimitives.ReadInt32LittleEndian(rest);
        if (count < 0 || rest.Length != 4 + (long)SettleTimer.Bytes * count)
            return false;
        timers = new SettleTimer[count];
        for (int i = 0; i < count; i++)
        {
            var entry = rest[(4 + SettleTimer.Bytes * i)..];
            var kind = (SettleTimerKind)entry[12];
            if (kind is not (SettleTimerKind.Cleared or SettleTimerKind.Delayed or SettleTimerKind.Leased))
                return false;
            timers[i] = new SettleTimer(BinaryPrimitives.ReadInt64LittleEndian(entry), BinaryPrimitives.ReadInt32LittleEndian(entry[8..]), kind,
                BinaryPrimitives.ReadInt64LittleEndian(entry[13..]), BinaryPrimitives.ReadUInt64LittleEndian(entry[21..]));
        }
        return true;
    }
}

/// <summary>A run of consecutive offsets: [First, First + Length).</summary>
internal readonly record struct OffsetRange(long First, int Length)
{
    public IEnumerable<long> Offsets
    {
        get
        {
            for (int i = 0; i < Length; i++)
                yield return First + i;
        }
    }

    /// <summary>The offsets as sorted runs (duplicates dropped).</summary>
    public static IReadOnlyList<OffsetRange> From(IEnumerable<long> offsets)
    {
        // Sorted in an array of their own, runs counted, then written into an array of that size: an ack frame's
        // offsets, out of order under priorities, would otherwise cost a sort buffer and a list grown several times.
        long[] sorted = [.. offsets];
        if (sorted.Length == 0)
            return [];
        Array.Sort(sorted);
        var ranges = new OffsetRange[WriteRuns(sorted, [])];
        WriteRuns(sorted, ranges);
        return ranges;
    }

    // The sorted offsets' runs of consecutive values (duplicates dropped), each at most int.MaxValue long, written into
    // `into` when it has room; returns how many there are.
    private static int WriteRuns(long[] sorted, Span<OffsetRange> into)
    {
        int count = 0;
        long first = sorted[0], last = sorted[0];
        for (int i = 1; i < sorted.Length; i++)
        {
            long offset = sorted[i];
            if (offset == last)
                continue;
            if (offset == last + 1 && offset - first < int.MaxValue)
            {
                last = offset;
                continue;
            }
            if (count < into.Length)
                into[count] = new OffsetRange(first, (int)(last - first + 1));
            count++;
            first = last = offset;
        }
        if (count < into.Length)
            into[count] = new OffsetRange(first, (int)(last - first + 1));
        return count + 1;
    }
}

/// <summary>What recovery rebuilt for one group from the state log.</summary>
internal sealed class RecoveredGroup(string name, GroupPolicy policy, long ackFloor, long floorAddress)
{
    public string Name { get; } = name;
    public GroupPolicy Policy { get; } = policy;
    public long AckFloor { get; private set; } = ackFloor;
    public long FloorAddress { get; private set; } = floorAddress;
    public HashSet<long> AcknowledgedAboveFloor { get; } = [];

    /// <summary>Deliveries so far of offsets not yet acknowledged.</summary>
    public Dictionary<long, int> Attempts { get; } = [];

    /// <summary>The latest settle timer of each offset (see <see cref="LiveTimers"/>).</summary>
    public Dictionary<long, SettleTimer> Timers { get; } = [];

    /// <summary>
    /// The timers that still hold their message: not cleared, not acknowledged, and for the offset's latest recorded
    /// delivery (a timer of an earlier attempt was superseded by a redelivery).
    /// </summary>
    public IEnumerable<SettleTimer> LiveTimers => Timers.Values.Where(t =>
        t.Kind != SettleTimerKind.Cleared && t.Offset >= AckFloor && !AcknowledgedAboveFloor.Contains(t.Offset)
        && Attempts.GetValueOrDefault(t.Offset) == t.Attempt);

    /// <summary>One past the highest offset the group's records mention: the group has seen the log at least that far.</summary>
    public long EndOffset => new[]
    {
        AckFloor,
        AcknowledgedAboveFloor.Count > 0 ? AcknowledgedAboveFloor.Max() + 1 : 0,
        Attempts.Count > 0 ? Attempts.Keys.Max() + 1 : 0,
        Timers.Count > 0 ? Timers.Keys.Max() + 1 : 0,
    }.Max();

    /// <summary>Moves the floor up to <paramref name="floor"/> (recovery repair); what lies below it is dropped.</summary>
    public void MoveFloor(long floor, long floorAddress)
    {
        AckFloor = floor;
        FloorAddress = floorAddress;
        AcknowledgedAboveFloor.RemoveWhere(offset => offset < floor);
        foreach (long offset in Attempts.Keys.Where(offset => offset < floor).ToList())
            Attempts.Remove(offset);
        foreach (long offset in Timers.Keys.Where(offset => offset < floor).ToList())
            Timers.Remove(offset);
    }

    public void Apply(GroupRecord record)
    {
        // Record order is the order of the changes for one offset: the latest count wins.
        foreach (var attempt in record.Attempts)
            Attempts[attempt.Offset] = attempt.Attempts;
        foreach (var timer in record.SettleTimers)
            Timers[timer.Offset] = timer;
        // Records of concurrent ack frames may land out of floor order; the highest floor is the truest one.
        if (record.AckFloor > AckFloor)
        {
            AckFloor = record.AckFloor;
            FloorAddress = record.FloorAddress;
        }
        foreach (long offset in record.Offsets)
            AcknowledgedAboveFloor.Add(offset);
    }
}
