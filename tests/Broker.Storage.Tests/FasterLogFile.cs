namespace Broker.Storage.Tests;

/// <summary>
/// Reads FasterLog's on-disk layout so tests can find and damage one entry by its address. An address is the segment
/// number shifted left by the segment bits plus the offset in file <c>log.N</c>; the first entry is at 64. With
/// <c>LogChecksum = PerEntry</c> each entry is an 8-byte checksum, a 4-byte length (negative for FASTER's own commit
/// records), then the payload padded to 4 bytes; an entry never crosses a page, and a zero length pads a page's end.
/// </summary>
internal static class FasterLogFile
{
    private const int HeaderBytes = 12;

    /// <summary>The application entries (not commit records) below <paramref name="endAddress"/>: address and payload.</summary>
    public static List<(long Address, byte[] Payload)> Entries(string logFolder, int pageBits, int segmentBits, long beginAddress, long endAddress)
    {
        var entries = new List<(long, byte[])>();
        long pageSize = 1L << pageBits;
        long address = Math.Max(beginAddress, 64);
        while (address < endAddress)
        {
            byte[] header = Read(logFolder, segmentBits, address, HeaderBytes);
            int length = BitConverter.ToInt32(header, 8);
            if (length == 0)
            {
                address = (address / pageSize + 1) * pageSize;
                continue;
            }
            int payloadLength = Math.Abs(length);
            if (length > 0)
                entries.Add((address, Read(logFolder, segmentBits, address + HeaderBytes, payloadLength)));
            address += HeaderBytes + ((payloadLength + 3) & ~3);
            if (address % pageSize == 0 || pageSize - address % pageSize < HeaderBytes)
                address = (address + pageSize - 1) / pageSize * pageSize;
        }
        return entries;
    }

    /// <summary>Flips one bit of the byte at <paramref name="address"/>, in place, as a failing disk would.</summary>
    public static void FlipBit(string logFolder, int segmentBits, long address)
    {
        using var file = new FileStream(SegmentPath(logFolder, segmentBits, address), FileMode.Open, FileAccess.ReadWrite);
        file.Position = address & ((1L << segmentBits) - 1);
        int value = file.ReadByte();
        file.Position--;
        file.WriteByte((byte)(value ^ 0x10));
    }

    public static string SegmentPath(string logFolder, int segmentBits, long address) => Path.Combine(logFolder, $"log.{address >> segmentBits}");

    private static byte[] Read(string logFolder, int segmentBits, long address, int count)
    {
        using var file = new FileStream(SegmentPath(logFolder, segmentBits, address), FileMode.Open, FileAccess.Read);
        file.Position = address & ((1L << segmentBits) - 1);
        var bytes = new byte[count];
        file.ReadExactly(bytes);
        return bytes;
    }
}
