using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using Broker.Storage.Groups;

namespace Broker.Server.Sqs;

/// <summary>
/// A receipt handle: the delivery (offset and token) of one queue, signed with HMAC-SHA256 under a key this process
/// drew at start, so a handle cannot be forged, altered or used on another queue. The key is not kept across restarts:
/// a restart hands every unextended delivery back to the queue anyway, and an old handle is refused as invalid.
/// </summary>
internal sealed class ReceiptHandles
{
    private const byte Version = 1;
    private const int MacLength = 16;
    private const int BodyLength = 1 + 8 + 8;
    private readonly byte[] _key = RandomNumberGenerator.GetBytes(32);

    public string Encode(string queue, DeliveryRef delivery)
    {
        Span<byte> handle = stackalloc byte[BodyLength + MacLength];
        handle[0] = Version;
        BinaryPrimitives.WriteInt64BigEndian(handle[1..], delivery.Offset);
        BinaryPrimitives.WriteUInt64BigEndian(handle[9..], delivery.Token);
        Mac(queue, handle[..BodyLength], handle[BodyLength..]);
        return Convert.ToBase64String(handle).TrimEnd('=').Replace('+', '-').Replace('/', '_');
    }

    public DeliveryRef Decode(string queue, string? handle)
    {
        if (string.IsNullOrEmpty(handle))
            throw SqsException.MissingParameter("ReceiptHandle");
        string padded = handle.Replace('-', '+').Replace('_', '/');
        padded += new string('=', (4 - padded.Length % 4) % 4);
        Span<byte> bytes = stackalloc byte[BodyLength + MacLength + 3];
        if (!Convert.TryFromBase64String(padded, bytes, out int length) || length != BodyLength + MacLength || bytes[0] != Version)
            throw SqsException.ReceiptHandleIsInvalid("not a receipt handle of this broker");
        Span<byte> expected = stackalloc byte[MacLength];
        Mac(queue, bytes[..BodyLength], expected);
        if (!CryptographicOperations.FixedTimeEquals(expected, bytes.Slice(BodyLength, MacLength)))
            throw SqsException.ReceiptHandleIsInvalid("not issued for this queue by this broker process (altered, another queue's, or from before a restart)");
        return new DeliveryRef(BinaryPrimitives.ReadInt64BigEndian(bytes[1..]), BinaryPrimitives.ReadUInt64BigEndian(bytes[9..]));
    }

    private void Mac(string queue, ReadOnlySpan<byte> body, Span<byte> mac)
    {
        byte[] queueBytes = Encoding.UTF8.GetBytes(queue);
        var input = new byte[queueBytes.Length + 1 + body.Length];
        queueBytes.CopyTo(input, 0);
        body.CopyTo(input.AsSpan(queueBytes.Length + 1));
        Span<byte> full = stackalloc byte[32];
        HMACSHA256.HashData(_key, input, full);
        full[..MacLength].CopyTo(mac);
    }
}
