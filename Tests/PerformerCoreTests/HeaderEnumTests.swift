import Foundation
import XCTest

import PerformerCore

/// The Swift enums whose raw values are C ABI codes, checked against include/performer.h itself:
/// a code added, renumbered or renamed on one side only fails here, not in a user's program.
final class HeaderEnumTests: XCTestCase {
    /// `typedef enum NAME { MEMBER = VALUE, ... } NAME;` blocks of the header, by enum name.
    private static let headerEnums: [String: [String: Int32]] = {
        let header = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("include/performer.h")
        guard let text = try? String(contentsOf: header, encoding: .utf8) else { return [:] }
        var enums = [String: [String: Int32]]()
        var current: String?
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("typedef enum ") {
                current = trimmed.dropFirst("typedef enum ".count).split(separator: " ").first.map(String.init)
                enums[current!] = [:]
            } else if current != nil, trimmed.hasPrefix("}") {
                current = nil
            } else if let name = current, trimmed.hasPrefix("PERFORMER_"),
                      let equals = trimmed.firstIndex(of: "=") {
                let member = trimmed[..<equals].trimmingCharacters(in: .whitespaces)
                let digits = trimmed[trimmed.index(after: equals)...].prefix { $0 == " " || $0.isNumber }
                if let value = Int32(digits.trimmingCharacters(in: .whitespaces)) {
                    enums[name]![member] = value
                }
            }
        }
        return enums
    }()

    /// "eluPlusOne" → "ELU_PLUS_ONE", "unsupportedCPU" → "UNSUPPORTED_CPU", "float32" → "FLOAT32".
    private static func cName(_ swiftCase: String) -> String {
        var result = ""
        var previous: Character?
        for character in swiftCase {
            if character.isUppercase, let previous, previous.isLowercase || previous.isNumber {
                result.append("_")
            }
            result.append(contentsOf: character.uppercased())
            previous = character
        }
        return result
    }

    /// Every member of the header's `cEnum` is a case of `swiftEnum` with the same value, and back.
    private func assertSame<E: CaseIterable & RawRepresentable>(
        _ swiftEnum: E.Type, as cEnum: String, prefix: String, names: (E) -> String = { "\($0)" },
        file: StaticString = #filePath, line: UInt = #line
    ) where E.RawValue == Int32 {
        guard let members = Self.headerEnums[cEnum] else {
            return XCTFail("include/performer.h has no `typedef enum \(cEnum)`", file: file, line: line)
        }
        var swiftMembers = [String: Int32]()
        for value in E.allCases { swiftMembers[prefix + Self.cName(names(value))] = value.rawValue }
        XCTAssertEqual(swiftMembers, members, "\(E.self) vs \(cEnum)", file: file, line: line)
    }

    func testTheHeaderIsFoundAndParsed() {
        XCTAssertGreaterThanOrEqual(Self.headerEnums.count, 6, "enums parsed: \(Self.headerEnums.keys.sorted())")
    }

    func testStatusCodes() {
        // PerformerStatus describes itself in words, so its case names come from this table;
        // the raw values and the header's names are what is checked.
        let names: [PerformerStatus: String] = [
            .ok: "OK", .nullPointer: "ERROR_NULL_POINTER", .invalidArgument: "ERROR_INVALID_ARGUMENT",
            .shapeMismatch: "ERROR_SHAPE_MISMATCH", .dtypeMismatch: "ERROR_DTYPE_MISMATCH",
            .sizeOverflow: "ERROR_SIZE_OVERFLOW", .aliasing: "ERROR_ALIASING", .outOfMemory: "ERROR_OUT_OF_MEMORY",
            .unsupportedVersion: "ERROR_UNSUPPORTED_VERSION", .unsupportedCPU: "ERROR_UNSUPPORTED_CPU",
        ]
        XCTAssertEqual(names.count, PerformerStatus.allCases.count, "a status case is missing from this test's table")
        let members = Self.headerEnums["performer_status"] ?? [:]
        for status in PerformerStatus.allCases {
            let name = "PERFORMER_" + (names[status] ?? "?")
            XCTAssertEqual(members[name], status.rawValue, "\(name)")
        }
        XCTAssertEqual(members.count, PerformerStatus.allCases.count, "header statuses: \(members.keys.sorted())")
    }

    func testDTypes() {
        assertSame(DType.self, as: "performer_dtype", prefix: "PERFORMER_")
    }

    func testLinearFeatureMaps() {
        assertSame(LinearAttentionOptions.FeatureMap.self, as: "performer_feature_map", prefix: "PERFORMER_FEATURE_")
    }

    func testFavorEnums() {
        assertSame(FavorFeatureKind.self, as: "performer_favor_feature_kind", prefix: "PERFORMER_FAVOR_")
        assertSame(FavorProjectionKind.self, as: "performer_favor_projection_kind", prefix: "PERFORMER_PROJECTION_")
        assertSame(FavorNorms.self, as: "performer_favor_norms", prefix: "PERFORMER_NORMS_")
    }
}
