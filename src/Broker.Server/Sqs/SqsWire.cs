using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Xml;

namespace Broker.Server.Sqs;

/// <summary>Which of the two SQS wire protocols a request came in, and so how its answer is written.</summary>
internal enum SqsProtocol
{
    /// <summary>Form-encoded <c>Action=...</c> parameters, XML answers (older botocore, the one Debian ships; kombu).</summary>
    Query,
    /// <summary><c>X-Amz-Target: AmazonSQS.&lt;Action&gt;</c> with an AWS JSON 1.0 body (current SDKs, AWSSDK.SQS v4).</summary>
    Json,
}

/// <summary>
/// The two SQS wire protocols, translated to one shape: every request becomes the JSON protocol's input object and every
/// answer is written from the JSON protocol's output object, so the actions are written once. The query protocol's
/// flattened lists and maps (<c>Attribute.1.Name</c>, <c>MessageAttribute.1.Value.StringValue</c>,
/// <c>SendMessageBatchRequestEntry.1.Id</c>) are folded into that shape here, and unfolded into XML on the way out.
/// </summary>
internal static class SqsWire
{
    public const string XmlNamespace = "http://queue.amazonaws.com/doc/2012-11-05/";
    public const string JsonContentType = "application/x-amz-json-1.0";

    /// <summary>Reads the action and its input from a request in either protocol.</summary>
    public static async Task<(SqsProtocol Protocol, string Action, JsonObject Input)> ReadAsync(HttpRequest request, CancellationToken cancellationToken)
    {
        if (request.Headers.TryGetValue("X-Amz-Target", out var target) && target.ToString() is { Length: > 0 } targetText)
        {
            string action = targetText.StartsWith("AmazonSQS.", StringComparison.Ordinal) ? targetText["AmazonSQS.".Length..] : targetText;
            JsonObject input;
            try
            {
                input = await JsonNode.ParseAsync(request.Body, cancellationToken: cancellationToken).ConfigureAwait(false) as JsonObject ?? [];
            }
            catch (JsonException error)
            {
                throw new SqsException("SerializationException", "SerializationException", $"The request body is not valid JSON: {error.Message}");
            }
            return (SqsProtocol.Json, action, input);
        }
        var parameters = new List<(string Key, string Value)>();
        foreach (var (key, values) in request.Query)
            parameters.Add((key, values.ToString()));
        if (request.HasFormContentType)
        {
            var form = await request.ReadFormAsync(cancellationToken).ConfigureAwait(false);
            foreach (var (key, values) in form)
                parameters.Add((key, values.ToString()));
        }
        string? queryAction = parameters.LastOrDefault(p => p.Key == "Action").Value;
        if (string.IsNullOrEmpty(queryAction))
            throw SqsException.MissingParameter("Action");
        return (SqsProtocol.Query, queryAction, Fold(parameters.Where(p => p.Key is not ("Action" or "Version")).Select(p => (p.Key.Split('.'), p.Value))));
    }

    /// <summary>Folds flattened query parameters (already split at dots) into the JSON protocol's input shape.</summary>
    private static JsonObject Fold(IEnumerable<(string[] Path, string Value)> parameters)
    {
        var result = new JsonObject();
        foreach (var group in parameters.GroupBy(p => p.Path[0], StringComparer.Ordinal))
        {
            string name = group.Key;
            var scalar = group.FirstOrDefault(p => p.Path.Length == 1);
            var indexed = group.Where(p => p.Path.Length > 1)
                .GroupBy(p => int.TryParse(p.Path[1], NumberStyles.None, CultureInfo.InvariantCulture, out int i) ? i : -1)
                .Where(g => g.Key >= 0).OrderBy(g => g.Key)
                .Select(g => g.Select(p => (Path: p.Path[2..], p.Value)).ToList()).ToList();
            switch (name)
            {
                case "Attribute":
                    result["Attributes"] = NameValueMap(indexed, "Name", "Value");
                    break;
                case "Tag":
                    result["Tags"] = NameValueMap(indexed, "Key", "Value");
                    break;
                case "MessageAttribute":
                case "MessageSystemAttribute":
                    var attributes = new JsonObject();
                    foreach (var entry in indexed)
                    {
                        string? attributeName = entry.FirstOrDefault(p => p.Path is ["Name"]).Value;
                        if (attributeName is null)
                            continue;
                        var value = new JsonObject();
                        foreach (var (path, text) in entry.Where(p => p.Path is ["Value", _]))
                            value[path[1]] = text;
                        attributes[attributeName] = value;
                    }
                    result[name + "s"] = attributes;
                    break;
                case "AttributeName" or "MessageAttributeName" or "MessageSystemAttributeName" or "TagKey":
                    result[name + "s"] = new JsonArray(indexed.Select(e => (JsonNode?)JsonValue.Create(e.FirstOrDefault(p => p.Path.Length == 0).Value)).ToArray());
                    break;
                default:
                    if (name.EndsWith("RequestEntry", StringComparison.Ordinal))
                        result["Entries"] = new JsonArray(indexed.Select(e => (JsonNode?)Fold(e.Where(p => p.Path.Length > 0))).ToArray());
                    else if (scalar.Path is not null)
                        result[name] = scalar.Value;
                    break;
            }
        }
        return result;
    }

    private static JsonObject NameValueMap(List<List<(string[] Path, string Value)>> entries, string nameField, string valueField)
    {
        var map = new JsonObject();
        foreach (var entry in entries)
        {
            string? name = entry.FirstOrDefault(p => p.Path.Length == 1 && p.Path[0] == nameField).Value;
            if (name is not null)
                map[name] = entry.FirstOrDefault(p => p.Path.Length == 1 && p.Path[0] == valueField).Value ?? "";
        }
        return map;
    }

    private static readonly HashSet<string> ActionsWithoutOutput = new(StringComparer.Ordinal)
    {
        "DeleteMessage", "DeleteQueue", "ChangeMessageVisibility", "PurgeQueue", "SetQueueAttributes", "TagQueue", "UntagQueue",
        "AddPermission", "RemovePermission",
    };

    /// <summary>Writes an action's output in the request's protocol.</summary>
    public static async Task WriteAsync(HttpResponse response, SqsProtocol protocol, string action, JsonObject output, string requestId)
    {
        response.Headers["x-amzn-RequestId"] = requestId;
        if (protocol == SqsProtocol.Json)
        {
            response.ContentType = JsonContentType;
            await response.WriteAsync(output.ToJsonString()).ConfigureAwait(false);
            return;
        }
        await WriteXmlAsync(response, writer =>
        {
            writer.WriteStartElement(action + "Response", XmlNamespace);
            // botocore looks for the Result element of every action with an output, even an empty one (ListQueues of none).
            if (!ActionsWithoutOutput.Contains(action))
            {
                writer.WriteStartElement(action + "Result");
                WriteMembers(writer, action, output);
                writer.WriteEndElement();
            }
            writer.WriteStartElement("ResponseMetadata");
            writer.WriteElementString("RequestId", requestId);
            writer.WriteEndElement();
            writer.WriteEndElement();
        }).ConfigureAwait(false);
    }

    /// <summary>
    /// Writes the document whole into memory, then sends it asynchronously: Kestrel refuses synchronous writes, which
    /// an XmlWriter makes once its buffer fills (an answer of ten 100 KiB messages).
    /// </summary>
    private static async Task WriteXmlAsync(HttpResponse response, Action<XmlWriter> write)
    {
        response.ContentType = "text/xml";
        using var buffer = new MemoryStream();
        using (var writer = XmlWriter.Create(buffer, XmlSettings))
            write(writer);
        await response.Body.WriteAsync(buffer.GetBuffer().AsMemory(0, (int)buffer.Length)).ConfigureAwait(false);
    }

    // Line breaks kept as they are (\r\n must not become \n: the body's MD5 would no longer match).
    private static readonly XmlWriterSettings XmlSettings = new() { Encoding = new System.Text.UTF8Encoding(false), NewLineHandling = NewLineHandling.Entitize };

    private static void WriteMembers(XmlWriter writer, string action, JsonObject members)
    {
        foreach (var (name, value) in members)
        {
            switch (name, value)
            {
                case ("QueueUrls" or "queueUrls", JsonArray urls):
                    foreach (var url in urls)
                        writer.WriteElementString("QueueUrl", url?.ToString());
                    break;
                case ("Messages", JsonArray messages):
                    foreach (var message in messages.OfType<JsonObject>())
                    {
                        writer.WriteStartElement("Message");
                        WriteMembers(writer, action, message);
                        writer.WriteEndElement();
                    }
                    break;
                case ("Successful", JsonArray entries):
                    WriteEntries(writer, action, action + "ResultEntry", entries);
                    break;
                case ("Failed", JsonArray entries):
                    WriteEntries(writer, action, "BatchResultErrorEntry", entries);
                    break;
                case ("Attributes", JsonObject attributes):
                    WritePairs(writer, "Attribute", "Name", "Value", attributes);
                    break;
                case ("Tags", JsonObject tags):
                    WritePairs(writer, "Tag", "Key", "Value", tags);
                    break;
                case ("MessageAttributes", JsonObject attributes):
                    foreach (var (attributeName, attribute) in attributes)
                    {
                        writer.WriteStartElement("MessageAttribute");
                        writer.WriteElementString("Name", attributeName);
                        writer.WriteStartElement("Value");
                        foreach (var (field, fieldValue) in attribute!.AsObject())
                            writer.WriteElementString(field, Text(fieldValue));
                        writer.WriteEndElement();
                        writer.WriteEndElement();
                    }
                    break;
                default:
                    writer.WriteElementString(name, Text(value));
                    break;
            }
        }
    }

    private static void WriteEntries(XmlWriter writer, string action, string element, JsonArray entries)
    {
        foreach (var entry in entries.OfType<JsonObject>())
        {
            writer.WriteStartElement(element);
            WriteMembers(writer, action, entry);
            writer.WriteEndElement();
        }
    }

    private static void WritePairs(XmlWriter writer, string element, string keyName, string valueName, JsonObject pairs)
    {
        foreach (var (key, value) in pairs)
        {
            writer.WriteStartElement(element);
            writer.WriteElementString(keyName, key);
            writer.WriteElementString(valueName, Text(value));
            writer.WriteEndElement();
        }
    }

    private static string Text(JsonNode? value) => value switch
    {
        null => "",
        JsonValue v when v.TryGetValue(out bool flag) => flag ? "true" : "false",
        JsonValue v when v.TryGetValue(out string? text) => text ?? "",
        _ => value.ToJsonString(),
    };

    /// <summary>Writes an error the way the request's protocol reports one.</summary>
    public static async Task WriteErrorAsync(HttpResponse response, SqsProtocol protocol, SqsException error, string requestId)
    {
        response.StatusCode = error.HttpStatus;
        response.Headers["x-amzn-RequestId"] = requestId;
        string fault = error.SenderFault ? "Sender" : "Receiver";
        if (protocol == SqsProtocol.Json)
        {
            response.ContentType = JsonContentType;
            // The query-compatible header lets SDKs report the same code in both protocols.
            response.Headers["x-amzn-query-error"] = $"{error.QueryCode};{fault}";
            var body = new JsonObject { ["__type"] = "com.amazonaws.sqs#" + error.JsonType, ["message"] = error.Message };
            await response.WriteAsync(body.ToJsonString()).ConfigureAwait(false);
            return;
        }
        await WriteXmlAsync(response, writer =>
        {
            writer.WriteStartElement("ErrorResponse", XmlNamespace);
            writer.WriteStartElement("Error");
            writer.WriteElementString("Type", fault);
            writer.WriteElementString("Code", error.QueryCode);
            writer.WriteElementString("Message", error.Message);
            writer.WriteElementString("Detail", "");
            writer.WriteEndElement();
            writer.WriteElementString("RequestId", requestId);
            writer.WriteEndElement();
        }).ConfigureAwait(false);
    }
}
