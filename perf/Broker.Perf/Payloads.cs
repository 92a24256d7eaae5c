using System.Buffers.Binary;
using System.Diagnostics;

namespace Broker.Perf;

/// <summary>
/// A perf message: 8 bytes of send time (Stopwatch ticks: one monotonic clock for the whole machine), 8 bytes of
/// message index, then filler up to the payload size.
/// </summary>
internal static class Payloads
{
    public const int HeaderBytes = 16;

    /// <summary>Bytes 0, 1, …, 255, 0, 1, …: the filler of every payload is a slice of it.</summary>
    private static byte[] s_filler = [];

    /// <summary>A payload whose filler byte i is (index + i) mod 256, so payloads differ from one another.</summary>
    public static byte[] Create(long index, int size, long sendTimestamp)
    {
        var payload = new byte[Math.Max(size, HeaderBytes)];
        BinaryPrimitives.WriteInt64LittleEndian(payload, sendTimestamp);
        BinaryPrimitives.WriteInt64LittleEndian(payload.AsSpan(8), index);
        // One vectorized copy instead of a byte loop: the load generator's CPU is taken from the broker's.
        int fillerLength = payload.Length - HeaderBytes;
        Filler(256 + fillerLength).AsSpan((int)((index + HeaderBytes) & 255), fillerLength).CopyTo(payload.AsSpan(HeaderBytes));
        return payload;
    }

    private static byte[] Filler(int length)
    {
        var filler = s_filler;
        if (filler.Length >= length)
            return filler;
        filler = new byte[length];
        for (int i = 0; i < filler.Length; i++)
            filler[i] = (byte)i;
        s_filler = filler;
        return filler;
    }

    public static (long SendTimestamp, long Index) Read(ReadOnlySpan<byte> payload) =>
        (BinaryPrimitives.ReadInt64LittleEndian(payload), BinaryPrimitives.ReadInt64LittleEndian(payload[8..]));

    public static long Now() => Stopwatch.GetTimestamp();
}
