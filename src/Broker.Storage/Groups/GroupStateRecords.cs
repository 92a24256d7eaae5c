using System.Buffers.Binary;
using System.Text;
using FASTER.core;

namespace Broker.Storage.Groups;

/// <summary>Kinds of record in a topic's group-state log.</summary>
internal enum GroupRecordKind : byte
{
    /// <summary>A group was created with its starting floor.</summary>
    Created = 1,
    /// <summary>Offsets were acknowledged; carries the floor after them.</summary>
    Acknowledged = 2,
}

/// <summary>
/// One record of the group-state log. Format version 1, little-endian:
/// <code>
/// byte kind, byte version (1), ushort group-name length, UTF-8 name,
/// long ack floor, long floor address, int offset count, long[] offsets
/// </code>
/// </summary>
internal readonly record struct GroupRecord(GroupRecordKind Kind, string Group, long AckFloor, long FloorAddress, IReadOnlyList<long> Offsets)
    : ILogEnqueueEntry
{
    private const byte Version1 = 1;

    public int SerializedLength => 4 + Encoding.UTF8.GetByteCount(Group) + 20 + 8 * Offsets.Count;

    public void SerializeTo(Span<byte> dest)
    {
        dest[0] = (byte)Kind;
        dest[1] = Version1;
        int nameLength = Encoding.UTF8.GetBytes(Group, dest[4..]);
        BinaryPrimitives.WriteUInt16LittleEndian(dest[2..], (ushort)nameLength);
        var rest = dest[(4 + nameLength)..];
        BinaryPrimitives.WriteInt64LittleEndian(rest, AckFloor);
        BinaryPrimitives.WriteInt64LittleEndian(rest[8..], FloorAddress);
        BinaryPrimitives.WriteInt32LittleEndian(rest[16..], Offsets.Count);
        for (int i = 0; i < Offsets.Count; i++)
            BinaryPrimitives.WriteInt64LittleEndian(rest[(20 + 8 * i)..], Offsets[i]);
    }

    public static bool TryParse(ReadOnlySpan<byte> entry, out GroupRecord record)
    {
        record = default;
        if (entry.Length < 4 || entry[1] != Version1)
            return false;
        var kind = (GroupRecordKind)entry[0];
        int nameLength = BinaryPrimitives.ReadUInt16LittleEndian(entry[2..]);
        if (kind is not (GroupRecordKind.Created or GroupRecordKind.Acknowledged) || entry.Length < 4 + nameLength + 20)
            return false;
        string group = Encoding.UTF8.GetString(entry.Slice(4, nameLength));
        var rest = entry[(4 + nameLength)..];
        long floor = BinaryPrimitives.ReadInt64LittleEndian(rest);
        long floorAddress = BinaryPrimitives.ReadInt64LittleEndian(rest[8..]);
        int count = BinaryPrimitives.ReadInt32LittleEndian(rest[16..]);
        if (count < 0 || rest.Length != 20 + 8L * count)
            return false;
        var offsets = new long[count];
        for (int i = 0; i < count; i++)
            offsets[i] = BinaryPrimitives.ReadInt64LittleEndian(rest[(20 + 8 * i)..]);
        record = new GroupRecord(kind, group, floor, floorAddress, offsets);
        return true;
    }
}

/// <summary>What recovery rebuilt for one group from the state log.</summary>
internal sealed class RecoveredGroup(string name, long ackFloor, long floorAddress)
{
    public string Name { get; } = name;
    public long AckFloor { get; private set; } = ackFloor;
    public long FloorAddress { get; private set; } = floorAddress;
    public HashSet<long> AcknowledgedAboveFloor { get; } = [];

    public void Apply(GroupRecord record)
    {
        // Records of concurrent acks may land out of floor order; the highest floor is the truest one.
        if (record.AckFloor > AckFloor)
        {
            AckFloor = record.AckFloor;
            FloorAddress = record.FloorAddress;
        }
        foreach (long offset in record.Offsets)
            AcknowledgedAboveFloor.Add(offset);
    }
}
