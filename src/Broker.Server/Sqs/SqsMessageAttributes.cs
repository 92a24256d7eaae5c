using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace Broker.Server.Sqs;

/// <summary>One SQS message attribute: a data type (String, Number, Binary, or one with a custom suffix) and a value.</summary>
internal sealed record SqsAttribute(string DataType, string? StringValue, byte[]? BinaryValue)
{
    public bool IsBinary => DataType.StartsWith("Binary", StringComparison.Ordinal);
}

/// <summary>
/// Message attributes kept as message headers, so gRPC and SQS see the same message: a String attribute is a header of
/// its name with its value; any other type adds a companion header <c>sqs-type.&lt;name&gt;</c> with the data type (and
/// a binary value is stored base64). On receive every header is an attribute (String unless its companion says
/// otherwise), so headers published over gRPC reach SQS consumers as String attributes, dead letters' included. The MD5
/// digests are computed exactly as AWS does, because the SDKs check them.
/// </summary>
internal static class SqsMessageAttributes
{
    public const string TypePrefix = "sqs-type.";
    public const int MaxAttributes = 10;

    public static List<KeyValuePair<string, string>> ToHeaders(IReadOnlyDictionary<string, SqsAttribute> attributes)
    {
        var headers = new List<KeyValuePair<string, string>>();
        foreach (var (name, attribute) in attributes)
        {
            string value = attribute.IsBinary ? Convert.ToBase64String(attribute.BinaryValue ?? []) : attribute.StringValue ?? "";
            headers.Add(new(name, value));
            if (attribute.DataType != "String")
                headers.Add(new(TypePrefix + name, attribute.DataType));
        }
        return headers;
    }

    public static SortedDictionary<string, SqsAttribute> FromHeaders(IReadOnlyList<KeyValuePair<string, string>> headers)
    {
        // Last one wins: headers published over gRPC may repeat a name, and a receive must never fail on that.
        var types = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (name, value) in headers)
        {
            if (name.StartsWith(TypePrefix, StringComparison.Ordinal))
                types[name[TypePrefix.Length..]] = value;
        }
        var attributes = new SortedDictionary<string, SqsAttribute>(StringComparer.Ordinal);
        foreach (var (name, value) in headers)
        {
            if (name.StartsWith(TypePrefix, StringComparison.Ordinal))
                continue;
            string type = types.GetValueOrDefault(name, "String");
            attributes[name] = type.StartsWith("Binary", StringComparison.Ordinal)
                ? new SqsAttribute(type, null, TryBase64(value))
                : new SqsAttribute(type, SqsText.Repaired(value), null);
        }
        return attributes;
    }

    /// <summary>Checks names, types and values as SQS does; the first problem is an InvalidParameterValue.</summary>
    public static void Validate(IReadOnlyDictionary<string, SqsAttribute> attributes)
    {
        if (attributes.Count > MaxAttributes)
            throw SqsException.InvalidParameter($"Number of message attributes [{attributes.Count}] exceeds the allowed maximum [{MaxAttributes}].");
        foreach (var (name, attribute) in attributes)
        {
            if (name.Length is 0 or > 256 || name.Any(c => !(char.IsAsciiLetterOrDigit(c) || c is '_' or '-' or '.'))
                || name.StartsWith('.') || name.EndsWith('.') || name.Contains("..", StringComparison.Ordinal)
                || name.StartsWith("AWS.", StringComparison.OrdinalIgnoreCase) || name.StartsWith("Amazon.", StringComparison.OrdinalIgnoreCase)
                || name.StartsWith(TypePrefix, StringComparison.Ordinal) || name.StartsWith("broker-", StringComparison.Ordinal))
                throw SqsException.InvalidParameter($"Message attribute name '{name}' is invalid.");
            string baseType = attribute.DataType.Split('.', 2)[0];
            if (baseType is not ("String" or "Number" or "Binary"))
                throw SqsException.InvalidParameter($"The type of message attribute '{name}' is invalid: '{attribute.DataType}'.");
            if (attribute.IsBinary ? attribute.BinaryValue is null : attribute.StringValue is null)
                throw SqsException.InvalidParameter($"Message attribute '{name}' must contain a non-empty value of type '{attribute.DataType}'.");
            if (baseType == "Number" && !decimal.TryParse(attribute.StringValue, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out _))
                throw SqsException.InvalidParameter($"Message attribute '{name}' of type Number has the value '{attribute.StringValue}', which is not a number.");
        }
    }

    /// <summary>MD5 of the message body's UTF-8 bytes, lower-case hex.</summary>
    public static string Md5OfBody(ReadOnlySpan<byte> body) => Convert.ToHexStringLower(MD5.HashData(body));

    /// <summary>AWS's digest of message attributes: in name order, each name, type and value length-prefixed.</summary>
    public static string? Md5OfAttributes(IReadOnlyDictionary<string, SqsAttribute> attributes)
    {
        if (attributes.Count == 0)
            return null;
        using var buffer = new MemoryStream();
        foreach (var (name, attribute) in attributes.OrderBy(a => a.Key, StringComparer.Ordinal))
        {
            WriteLengthPrefixed(buffer, Encoding.UTF8.GetBytes(name));
            WriteLengthPrefixed(buffer, Encoding.UTF8.GetBytes(attribute.DataType));
            if (attribute.IsBinary)
            {
                buffer.WriteByte(2);
                WriteLengthPrefixed(buffer, attribute.BinaryValue ?? []);
            }
            else
            {
                buffer.WriteByte(1);
                WriteLengthPrefixed(buffer, Encoding.UTF8.GetBytes(attribute.StringValue ?? ""));
            }
        }
        return Convert.ToHexStringLower(MD5.HashData(buffer.ToArray()));
    }

    private static void WriteLengthPrefixed(Stream stream, byte[] bytes)
    {
        Span<byte> length = stackalloc byte[4];
        BinaryPrimitives.WriteInt32BigEndian(length, bytes.Length);
        stream.Write(length);
        stream.Write(bytes);
    }

    private static byte[] TryBase64(string value)
    {
        try
        {
            return Convert.FromBase64String(value);
        }
        catch (FormatException)
        {
            return Encoding.UTF8.GetBytes(value);
        }
    }
}
